//! The WAN lab does what its routers promise: homes reach the internet, nothing reaches a
//! home unasked, a cone NAT keeps a connection's port and a symmetric one does not, and a
//! UPnP router maps a port when asked. Needs root; says so and passes vacuously never:
//! without root it fails with the reason, unless `JEWEL_SKIP_LAB=1` is set.

use jewel_testkit::delay::Line;
use jewel_testkit::{Router, Wan};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// Round trips of one byte over a TCP connection from the namespace `ns` to an echo
/// server at `to`:5002 in `server_ns`: the connection's set-up time, then `n` echoes.
fn round_trips(server_ns: &str, ns: &str, to: &str, n: usize) -> (Duration, Vec<Duration>) {
    use std::io::{Read, Write};
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = jewel_testkit::in_netns(server_ns, move || {
        let l = std::net::TcpListener::bind("0.0.0.0:5002").unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b).unwrap();
        }
    });
    ready_rx.recv().unwrap();
    let to = format!("{to}:5002");
    let client = jewel_testkit::in_netns(ns, move || {
        let t = Instant::now();
        let mut s =
            std::net::TcpStream::connect_timeout(&to.parse().unwrap(), Duration::from_secs(5)).unwrap();
        let connect = t.elapsed();
        s.set_nodelay(true).unwrap();
        let mut times = Vec::new();
        let mut b = [7u8; 1];
        for _ in 0..n {
            let t = Instant::now();
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
            times.push(t.elapsed());
        }
        (connect, times)
    });
    let got = client.join().unwrap();
    server.join().unwrap();
    got
}

/// The delay line gives each address its one-way delay: a round trip between two takes
/// twice the sum of theirs (a home's, behind its router, too), never less; an address with
/// none set has none; loss drops about the share asked.
#[test]
fn the_delay_line_gives_each_address_its_round_trip_time_and_loss() {
    if !lab_or_skip(false) {
        return;
    }
    let mut lab = Wan::new(3, &[Router::Cone]);
    let ms = Duration::from_millis;
    let (p0, p1, p2, home) =
        (lab.publics[0].clone(), lab.publics[1].clone(), lab.publics[2].clone(), lab.homes[0].clone());
    lab.delays(&[
        (&p0.addr, Line { delay: ms(20), loss: 0.0 }),
        (&p1.addr, Line { delay: ms(5), loss: 0.0 }),
        (&home.wan, Line { delay: ms(10), loss: 0.0 }),
    ]);
    // 2 × (20 + 5) = 50 ms; 2 × (10 + 20) = 60 ms; p2 has no delay: 2 × 5 = 10 ms to p1.
    for (server, client, to, rtt) in [
        (&p1.ns, &p0.ns, &p1.addr, ms(50)),
        (&p0.ns, &home.host.ns, &p0.addr, ms(60)),
        (&p2.ns, &p1.ns, &p2.addr, ms(10)),
    ] {
        let (connect, mut times) = round_trips(server, client, to, 9);
        times.sort();
        let median = times[4];
        eprintln!("{client} → {to}: connect {connect:?}, echo median {median:?} (set {rtt:?})");
        assert!(connect >= rtt && times[0] >= rtt, "faster than the line: {connect:?} {times:?} < {rtt:?}");
        assert!(median < rtt + ms(40), "median {median:?} for a round trip of {rtt:?}");
    }
    // Loss: 30% of the datagrams p2 sends to p1 are lost.
    lab.delays(&[(&p2.addr, Line { delay: Duration::ZERO, loss: 0.3 })]);
    // The receiver tells each arrival, so the sender never outruns its socket's buffer
    // (an overflow there would pass for loss).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (got_tx, got_rx) = std::sync::mpsc::channel::<usize>();
    let receiver = jewel_testkit::in_netns(&p1.ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:5003").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        ready_tx.send(()).unwrap();
        let mut got = 0;
        let mut b = [0u8; 16];
        while s.recv(&mut b).is_ok() {
            got += 1;
            let _ = got_tx.send(got);
        }
        got
    });
    ready_rx.recv().unwrap();
    let to = format!("{}:5003", p1.addr);
    jewel_testkit::in_netns(&p2.ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut arrived = 0;
        for i in 0..2000usize {
            s.send_to(&(i as u32).to_be_bytes(), &to).unwrap();
            // Every 100 sent, wait until half of what was sent has arrived (70% should).
            if i % 100 == 99 {
                while arrived < i.div_ceil(2) {
                    match got_rx.recv_timeout(Duration::from_secs(2)) {
                        Ok(n) => arrived = n,
                        Err(_) => break,
                    }
                }
            }
        }
    })
    .join()
    .unwrap();
    let got = receiver.join().unwrap();
    assert!((1200..1600).contains(&got), "{got} of 2000 datagrams arrived at 30% loss");
}
