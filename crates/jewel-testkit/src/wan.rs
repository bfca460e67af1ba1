//! The WAN lab: an "internet" of network namespaces on one machine, with public hosts and
//! homes behind NAT routers of the kinds people have, made by a test and torn down when
//! it is dropped (also when the test fails or panics).
//!
//! - The internet is a bridge in a namespace of its own. Its addresses are in
//!   `11.0.0.0/8`: global-looking, so that nodes treat them as the internet (Jewel and
//!   libp2p's AutoNAT ignore private and benchmarking ranges), and reachable from nowhere
//!   else: the namespaces have no route out of the lab.
//! - A public host has an internet address of its own (`11.0.P.1`), each in a /24 of its
//!   own, as hosts on the internet mostly are (Jewel spreads a file's pieces over /24s).
//! - A home is a host at `192.168.1.2` behind a router (`192.168.1.1` inside,
//!   `11.1.H.1` outside), every home on the same private range, as at home: a private
//!   address learned from another home names a machine in one's own home, or none. The
//!   router forwards what its home sends, lets in only replies (conntrack), and does one
//!   kind of NAT, see [`Router`].
//!
//! Links can be shaped with `tbf` ([`Wan::shape`]); the kernel here has no `netem`, so
//! round-trip times and loss come from a delay line in user space ([`Wan::delays`], see
//! [`crate::delay`]).
//!
//! Everything needs root (CI runs as root); [`Wan::available`] says whether this machine
//! can build a lab, so a test can say plainly why it did not run.

use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};

/// Runs `f` on a thread of its own inside network namespace `ns` (one made by `ip netns
/// add`, such as a lab host's): every socket it opens and every thread it starts belong to
/// that namespace, so a test can play peers at a lab address from its own process.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) with a descriptor this thread holds open; it moves only the
        // calling thread into the namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// How a home's router maps its hosts' connections to its internet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Router {
    /// Endpoint-independent mapping: nftables `masquerade` keeps a connection's source port
    /// where it can, whoever it goes to (a "cone" NAT, the common home router). Hole
    /// punching works through it.
    Cone,
    /// Address-and-port-dependent mapping: `masquerade random` gives every new destination
    /// a random port (a "symmetric" NAT, as on mobile carriers). Hole punching does not
    /// work through it; relays do.
    Symmetric,
    /// A cone NAT whose router also maps ports on request (UPnP IGD and NAT-PMP, by
    /// `miniupnpd`), as many home routers do.
    Upnp,
}

/// A host in the lab.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its network namespace (run things in it with `ip netns exec`).
    pub ns: String,
    /// Its own address.
    pub addr: String,
}

/// A home: one host behind a router.
#[derive(Clone, Debug)]
pub struct Home {
    pub host: Host,
    /// The router's namespace.
    pub router_ns: String,
    /// The router's internet address: what others see of the home.
    pub wan: String,
    pub router: Router,
}

/// A lab: see the module's doc.
pub struct Wan {
    inet: String,
    pub publics: Vec<Host>,
    pub homes: Vec<Home>,
    upnpd: Vec<Child>,
    delay: Option<crate::delay::DelayLine>,
    dir: tempfile::TempDir,
}

/// Runs `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("iproute2's ip: {e}"));
    assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Loads an nftables ruleset into namespace `ns`.
fn nft(ns: &str, rules: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("nft: {e}"));
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(rules.as_bytes());
    }
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("nft: {e}"));
    assert!(o.status.success(), "nft in {ns}: {}\n{rules}", String::from_utf8_lossy(&o.stderr));
}

/// A home router's rules: forward what the home sends, let in only replies, NAT the rest.
/// A UPnP router has miniupnpd's chains too (it adds port mappings to them).
fn router_rules(kind: Router) -> String {
    let masquerade = match kind {
        Router::Symmetric => "masquerade random",
        Router::Cone | Router::Upnp => "masquerade",
    };
    let (upnp_forward, upnp_pre, upnp_post, upnp_chains) = if kind == Router::Upnp {
        (
            "jump miniupnpd",
            "jump prerouting_miniupnpd",
            "jump postrouting_miniupnpd",
            "chain miniupnpd { }\n chain prerouting_miniupnpd { }\n chain postrouting_miniupnpd { }",
        )
    } else {
        ("", "", "", "")
    };
    format!(
        "table inet filter {{
  chain forward {{ type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname \"lan\" oifname \"wan\" accept
    {upnp_forward}
  }}
  chain input {{ type filter hook input priority 0; policy drop;
    ct state established,related accept
    iifname {{ \"lo\", \"lan\" }} accept
    icmp type echo-request accept
  }}
  chain prerouting {{ type nat hook prerouting priority -100; policy accept;
    {upnp_pre}
  }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept;
    {upnp_post}
    oifname \"wan\" {masquerade}
  }}
  {upnp_chains}
}}
"
    )
}

impl Wan {
    /// Whether this machine can build a lab: root, `ip` and `nft` (and `miniupnpd` for
    /// UPnP homes); `Err` says what is missing.
    pub fn available(upnp: bool) -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the WAN lab needs root (network namespaces)".into());
        }
        let tools: &[&str] =
            if upnp { &["ip", "nft", "iptables", "miniupnpd"] } else { &["ip", "nft", "iptables"] };
        for tool in tools {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false);
            let sbin = ["/usr/sbin", "/sbin"].iter().any(|d| std::path::Path::new(d).join(tool).is_file());
            if !found && !sbin {
                return Err(format!("the WAN lab needs `{tool}` (.ci/run installs it)"));
            }
        }
        Ok(())
    }

    /// A lab with `publics` public hosts and one home behind each router of `homes`.
    pub fn new(publics: usize, homes: &[Router]) -> Wan {
        assert!(publics < 250 && homes.len() < 250, "at most 249 public hosts and 249 homes");
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("jw{}n{n}", std::process::id());
        let dir = tempfile::Builder::new().prefix("jewel-wan-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut lab = Wan {
            inet: format!("{tag}i"),
            publics: Vec::new(),
            homes: Vec::new(),
            upnpd: Vec::new(),
            delay: None,
            dir,
        };
        ip(&["netns", "add", &lab.inet]);
        ip(&["-n", &lab.inet, "link", "add", "name", "inet0", "type", "bridge"]);
        ip(&["-n", &lab.inet, "link", "set", "inet0", "up"]);
        // A link from namespace `ns` (device `dev`) to the internet bridge (device `port`).
        let plug = |ns: &str, dev: &str, port: &str, addr: &str| {
            ip(&["link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", &lab.inet]);
            ip(&["-n", &lab.inet, "link", "set", port, "master", "inet0"]);
            ip(&["-n", &lab.inet, "link", "set", port, "up"]);
            ip(&["-n", ns, "addr", "add", &format!("{addr}/8"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        };
        for p in 0..publics {
            let host = Host { ns: format!("{tag}p{p}"), addr: format!("11.0.{}.1", p + 1) };
            ip(&["netns", "add", &host.ns]);
            plug(&host.ns, "eth0", &format!("p{p}"), &host.addr);
            lab.publics.push(host);
        }
        for (h, kind) in homes.iter().enumerate() {
            let home = Home {
                host: Host { ns: format!("{tag}h{h}"), addr: "192.168.1.2".into() },
                router_ns: format!("{tag}r{h}"),
                wan: format!("11.1.{}.1", h + 1),
                router: *kind,
            };
            ip(&["netns", "add", &home.router_ns]);
            ip(&["netns", "add", &home.host.ns]);
            plug(&home.router_ns, "wan", &format!("h{h}"), &home.wan);
            let (r, host) = (&home.router_ns, &home.host.ns);
            ip(&["link", "add", "lan", "netns", r, "type", "veth", "peer", "name", "eth0", "netns", host]);
            ip(&["-n", r, "addr", "add", "192.168.1.1/24", "dev", "lan"]);
            ip(&["-n", r, "link", "set", "lan", "up"]);
            ip(&["-n", host, "addr", "add", "192.168.1.2/24", "dev", "eth0"]);
            ip(&["-n", host, "link", "set", "eth0", "up"]);
            ip(&["-n", host, "link", "set", "lo", "up"]);
            ip(&["-n", host, "route", "add", "default", "via", "192.168.1.1"]);
            let forward = Command::new("ip")
                .args(["netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
                .status()
                .unwrap_or_else(|e| panic!("sysctl: {e}"));
            assert!(forward.success(), "sysctl ip_forward in {r}");
            nft(r, &router_rules(*kind));
            if *kind == Router::Upnp {
                let child = lab.start_upnpd(h, &home);
                lab.upnpd.push(child);
            }
            lab.homes.push(home);
        }
        lab
    }

    /// Starts miniupnpd on home `h`'s router (UPnP IGD and NAT-PMP on its inside, mapping
    /// ports of the home's host only, to itself only).
    fn start_upnpd(&self, h: usize, home: &Home) -> Child {
        let conf = self.dir.path().join(format!("miniupnpd-{h}.conf"));
        let text = format!(
            "ext_ifname=wan\nlistening_ip=lan\nhttp_port=0\nenable_natpmp=yes\nenable_upnp=yes\n\
             secure_mode=yes\nsystem_uptime=yes\next_perform_stun=no\n\
             uuid=4f2b3c1a-0000-4000-8000-{h:012}\n\
             upnp_table_name=filter\nupnp_nat_table_name=filter\nupnp_forward_chain=miniupnpd\n\
             upnp_nat_chain=prerouting_miniupnpd\nupnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             allow 1024-65535 192.168.1.2/32 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        );
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        let pid = self.dir.path().join(format!("miniupnpd-{h}.pid"));
        Command::new("ip")
            .args(["netns", "exec", &home.router_ns, "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(&pid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("miniupnpd: {e}"))
    }

    /// Limits what namespace `ns` sends on `dev` to `rate` (tc's units: `20mbit`), with a
    /// token bucket (`tbf`).
    pub fn shape(&self, ns: &str, dev: &str, rate: &str) {
        let o = Command::new("ip")
            .args(["netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate])
            .args(["burst", "64kb", "latency", "100ms"])
            .output()
            .unwrap_or_else(|e| panic!("tc: {e}"));
        assert!(o.status.success(), "tc in {ns}: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// Gives each of `lines`' lab addresses (a public host's, or a home's router's) a line
    /// to the core of the internet: its one-way delay and loss (see [`crate::delay`]). A
    /// round trip between two addresses takes twice the sum of their delays; an address
    /// not given has none. The first call starts the delay line (it needs `iptables`).
    pub fn delays(&mut self, lines: &[(&str, crate::delay::Line)]) {
        if self.delay.is_none() {
            let line = crate::delay::DelayLine::start(&self.inet).unwrap_or_else(|e| panic!("{e}"));
            for cmd in [
                &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"][..],
                &["iptables", "-A", "FORWARD", "-j", "NFQUEUE", "--queue-num", "0"][..],
            ] {
                let o = Command::new("ip")
                    .args(["netns", "exec", &self.inet])
                    .args(cmd)
                    .output()
                    .unwrap_or_else(|e| panic!("{}: {e}", cmd[0]));
                assert!(o.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&o.stderr));
            }
            self.delay = Some(line);
        }
        if let Some(d) = &self.delay {
            for (addr, line) in lines {
                d.set(addr.parse().unwrap_or_else(|e| panic!("{addr}: {e}")), *line);
            }
        }
    }

    /// Limits what public host `p` receives to `rate` (its downlink): a token bucket on the
    /// internet's side of its line.
    pub fn shape_down(&self, p: usize, rate: &str) {
        self.shape(&self.inet, &format!("p{p}"), rate);
    }

    /// The port mappings home `h`'s router holds for it (UPnP or NAT-PMP), as nftables
    /// prints its DNAT rules: one line each.
    pub fn mappings(&self, h: usize) -> Vec<String> {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.homes[h].router_ns, "nft", "list", "chain", "inet", "filter"])
            .arg("prerouting_miniupnpd")
            .output()
            .unwrap_or_else(|e| panic!("nft: {e}"));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains("dnat"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Wan {
    fn drop(&mut self) {
        self.delay = None;
        for c in &mut self.upnpd {
            let _ = c.kill();
            let _ = c.wait();
        }
        let all = self
            .publics
            .iter()
            .map(|h| &h.ns)
            .chain(self.homes.iter().flat_map(|h| [&h.host.ns, &h.router_ns]))
            .chain([&self.inet]);
        for ns in all {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
