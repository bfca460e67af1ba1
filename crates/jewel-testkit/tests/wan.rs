//! The WAN lab does what its routers promise: homes reach the internet, nothing reaches a
//! home unasked, a cone NAT keeps a connection's port and a symmetric one does not, and a
//! UPnP router maps a port when asked. Needs root; says so and passes vacuously never:
//! without root it fails with the reason, unless `JEWEL_SKIP_LAB=1` is set.

use jewel_testkit::{Router, Wan};
use std::process::Command;

fn lab_or_skip(upnp: bool) -> bool {
    match Wan::available(upnp) {
        Ok(()) => true,
        Err(why) if std::env::var("JEWEL_SKIP_LAB").is_ok() => {
            eprintln!("skipped: {why}");
            false
        }
        Err(why) => panic!("{why} (set JEWEL_SKIP_LAB=1 to skip the lab's tests)"),
    }
}

/// Sends one UDP datagram from `ns` (source port 40000) to `to`:5000 where a listener in
/// `listener_ns` prints the address it came from; returns that address.
fn seen_from(listener_ns: &str, ns: &str, to: &str) -> String {
    let listen = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5000))\ns.settimeout(10)\nprint('ready',flush=True)\nd,a=s.recvfrom(100)\nprint(a[0]+':'+str(a[1]),flush=True)";
    let mut server = Command::new("ip")
        .args(["netns", "exec", listener_ns, "python3", "-c", listen])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let send = format!("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',40000))\ns.sendto(b'x',('{to}',5000))");
    let sent = Command::new("ip").args(["netns", "exec", ns, "python3", "-c", &send]).status().unwrap();
    assert!(sent.success());
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let _ = server.wait();
    line.trim().to_string()
}

/// Whether a TCP connection from namespace `ns` to `to`:5001 reaches a listener in
/// `listener_ns` within a second.
fn connects(ns: &str, listener_ns: &str, to: &str) -> bool {
    let listen = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',5001))\ns.listen()\ns.settimeout(3)\nprint('ready',flush=True)\ntry:\n  s.accept()\nexcept OSError:\n  pass";
    let mut server = Command::new("ip")
        .args(["netns", "exec", listener_ns, "python3", "-c", listen])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let dial = format!("import socket\nsocket.create_connection(('{to}',5001),timeout=1)");
    let reached = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", &dial])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = server.kill();
    let _ = server.wait();
    reached
}

#[test]
fn the_lab_routers_do_what_their_kind_promises() {
    if !lab_or_skip(false) {
        return;
    }
    let lab = Wan::new(1, &[Router::Cone, Router::Symmetric]);
    let (public, cone, symmetric) = (&lab.publics[0], &lab.homes[0], &lab.homes[1]);
    assert!(connects(&cone.host.ns, &public.ns, &public.addr), "a home reaches the internet");
    assert!(!connects(&public.ns, &cone.router_ns, &cone.wan), "nothing reaches a home's router unasked");
    assert!(
        !connects(&public.ns, &cone.host.ns, "192.168.1.2"),
        "a home's private address is not on the internet"
    );
    assert_eq!(seen_from(&public.ns, &cone.host.ns, &public.addr), format!("{}:40000", cone.wan));
    let seen = seen_from(&public.ns, &symmetric.host.ns, &public.addr);
    assert!(seen.starts_with(&format!("{}:", symmetric.wan)), "{seen}");
    assert_ne!(seen, format!("{}:40000", symmetric.wan), "a symmetric NAT picks another port");
    // A home cannot reach another home unasked either.
    assert!(!connects(&cone.host.ns, &symmetric.router_ns, &symmetric.wan));
    assert!(!connects(&cone.host.ns, &symmetric.host.ns, &symmetric.wan));
}

/// A UPnP router maps a port its home asks for (here through NAT-PMP), and the internet
/// then reaches the home's host through it; a cone router does not answer.
#[test]
fn a_upnp_router_maps_a_port_when_asked() {
    if !lab_or_skip(true) {
        return;
    }
    let lab = Wan::new(1, &[Router::Upnp]);
    let (public, home) = (&lab.publics[0], &lab.homes[0]);
    assert!(!connects(&public.ns, &home.host.ns, &home.wan), "not reachable before the mapping");
    // NAT-PMP: version 0, opcode 2 (TCP), internal port 5001, external 5001, one hour.
    let ask = "import socket,struct,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(1)\nfor _ in range(10):\n  s.sendto(struct.pack('!BBHHHI',0,2,0,5001,5001,3600),('192.168.1.1',5351))\n  try:\n    d=s.recv(100)\n    break\n  except OSError:\n    pass\nprint(struct.unpack('!BBHIHHI',d[:16])[2])";
    let o = Command::new("ip").args(["netns", "exec", &home.host.ns, "python3", "-c", ask]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0", "NAT-PMP result code: {o:?}");
    assert_eq!(lab.mappings(0).len(), 1, "one mapping: {:?}", lab.mappings(0));
    let rules = Command::new("ip")
        .args(["netns", "exec", &home.router_ns, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    assert!(
        connects(&public.ns, &home.host.ns, &home.wan),
        "reachable through the mapping: {}",
        String::from_utf8_lossy(&rules.stdout)
    );
}
