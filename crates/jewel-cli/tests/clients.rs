//! Real clients (issue 23) through the binary, on a node of a devnet: `jewel serve gateway`
//! asked as a browser or a media player asks (with ranges; a video in headless Chromium),
//! and `jewel serve restic` used by restic itself.

use std::io::{BufRead, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jewel_testkit::{eventually, exclusive, Devnet};

const BIN: &str = env!("CARGO_BIN_EXE_jewel");

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `jewel serve KIND` running (killed on drop): its URL without the token, and the token.
struct Served {
    child: Child,
    base: String,
    token: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(home: &Path) -> Served {
    serve_kind(home, &["gateway"])
}

fn serve_kind(home: &Path, what: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .args(["--home", home.to_str().unwrap(), "serve"])
        .args(what)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    // http://jewel:TOKEN@127.0.0.1:PORT/
    let rest = line.trim().strip_prefix("http://jewel:").unwrap_or_else(|| panic!("first line: {line}"));
    let (token, addr) = rest.split_once('@').unwrap();
    Served { child, base: format!("http://{}", addr.trim_end_matches('/')), token: token.to_string() }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// GET (or HEAD) with headers: status, headers, body.
fn ask(method: &str, url: &str, headers: &[(&str, &str)]) -> (u16, ureq::http::HeaderMap, Vec<u8>) {
    let a = agent();
    let mut req = if method == "HEAD" { a.head(url) } else { a.get(url) };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.call().unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = Vec::new();
    if method != "HEAD" {
        resp.body_mut().with_config().limit(u64::MAX).reader().read_to_end(&mut body).unwrap();
    }
    (status, headers, body)
}

fn header<'a>(h: &'a ureq::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// What a browser and a media player do: the whole file, a range in the middle, the last
/// bytes, past the end; `If-None-Match`, `If-Range`, `HEAD`; a type from the name or the
/// content; the index by path with the token only; ways out of the index refused; nothing
/// for what names no file.
#[test]
fn a_gateway_serves_files_by_cap_and_by_path_with_ranges() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 4, |_| Vec::new());
    let me = &net.peers[0];
    let data = random(3 << 20, 7);
    let file = net.path("movie.bin");
    std::fs::write(&file, &data).unwrap();
    let cap = me.ok(&["put", file.to_str().unwrap(), "--as", "films/movie.bin", "--scheme", "replicate:2"]);
    let cap = cap.trim().to_string();
    let tree = net.path("notes");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("a.txt"), b"hello from a packed file").unwrap();
    std::fs::write(tree.join("pic"), b"\x89PNG\r\n\x1a\n0000000000000000").unwrap();
    me.ok(&["put", "-r", tree.to_str().unwrap(), "--scheme", "replicate:2"]);
    let g = serve(&me.home);
    let url = format!("{}/jewel/{cap}", g.base);

    let (status, h, body) = ask("GET", &url, &[]);
    assert_eq!((status, body.len()), (200, data.len()));
    assert!(body == data, "the whole file");
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert_eq!(header(&h, "content-security-policy"), "sandbox");
    let etag = header(&h, "etag").to_string();
    assert!(etag.len() > 60, "{etag}");

    let (status, h, body) = ask("GET", &url, &[("Range", "bytes=1000000-1000099")]);
    assert_eq!(status, 206);
    assert_eq!(header(&h, "content-range"), format!("bytes 1000000-1000099/{}", data.len()));
    assert!(body == data[1_000_000..1_000_100]);
    let (status, _, body) = ask("GET", &url, &[("Range", "bytes=-10")]);
    assert_eq!((status, body.as_slice()), (206, &data[data.len() - 10..]));
    let (status, _, body) = ask("GET", &url, &[("Range", &format!("bytes={}-", data.len() - 5))]);
    assert_eq!((status, body.as_slice()), (206, &data[data.len() - 5..]));
    let (status, h, _) = ask("GET", &url, &[("Range", &format!("bytes={}-", data.len()))]);
    assert_eq!((status, header(&h, "content-range")), (416, format!("bytes */{}", data.len()).as_str()));
    // An ETag answers If-None-Match; If-Range with another tag sends the whole file.
    assert_eq!(ask("GET", &url, &[("If-None-Match", &etag)]).0, 304);
    let (status, _, body) = ask("GET", &url, &[("Range", "bytes=0-9"), ("If-Range", "\"other\"")]);
    assert_eq!((status, body.len()), (200, data.len()));
    let (status, h, body) = ask("HEAD", &url, &[]);
    assert_eq!((status, header(&h, "content-length"), body.len()), (200, "3145728", 0));
    // The type: from the name, or from the first bytes.
    let (_, h, _) = ask("HEAD", &format!("{url}/clip.mp4"), &[]);
    assert_eq!(header(&h, "content-type"), "video/mp4");
    let pic = me.ok(&["ls", "notes/pic", "--json"]);
    let pic: serde_json::Value = serde_json::from_str(&pic).unwrap();
    let pic = pic["entries"][0]["caps"][0].as_str().unwrap().to_string();
    let (status, h, _) = ask("GET", &format!("{}/jewel/{pic}", g.base), &[]);
    assert_eq!((status, header(&h, "content-type")), (200, "image/png"), "a packed file, sniffed");

    // The index, by path: the token only.
    let by_path = format!("{}/files/notes/a.txt", g.base);
    assert_eq!(ask("GET", &by_path, &[]).0, 401);
    assert_eq!(ask("GET", &by_path, &[("Authorization", "Bearer nope")]).0, 401);
    let auth = format!("Bearer {}", g.token);
    let (status, h, body) = ask("GET", &by_path, &[("Authorization", &auth)]);
    assert_eq!((status, body.as_slice()), (200, &b"hello from a packed file"[..]));
    assert_eq!(header(&h, "content-type"), "text/plain");
    let (status, _, body) = ask(
        "GET",
        &format!("{}/files/films/movie.bin", g.base),
        &[("Authorization", &auth), ("Range", "bytes=5-9")],
    );
    assert_eq!((status, body.as_slice()), (206, &data[5..10]));
    for bad in
        ["/files/notes/../films/movie.bin", "/files/notes%2Fa.txt", "/files/notes/a%00.txt", "/files/nothing"]
    {
        let (status, _, body) = ask("GET", &format!("{}{bad}", g.base), &[("Authorization", &auth)]);
        assert_eq!(status, 404, "{bad}");
        assert_eq!(body, b"not found", "{bad}: no detail");
    }
    // What names no readable file: 404, no detail.
    for bad in ["/jewel/nonsense", "/jewel/jewel:r1:aaaa", "/other"] {
        let (status, _, body) = ask("GET", &format!("{}{bad}", g.base), &[]);
        assert_eq!((status, body.as_slice()), (404, &b"not found"[..]), "{bad}");
    }
}

/// A client that goes away mid-stream leaves nothing running (a read the client stopped
/// reading would otherwise wait on it for ever), and Ctrl-C of `jewel serve gateway` stops
/// the gateway.
#[test]
fn a_client_gone_mid_stream_leaves_nothing_running_and_the_gateway_ends_with_its_command() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let me = &net.peers[0];
    let file = net.path("big.bin");
    std::fs::write(&file, random(48 << 20, 3)).unwrap();
    let cap = me.ok(&["put", file.to_str().unwrap(), "--scheme", "replicate:2"]).trim().to_string();
    let mut g = serve(&me.home);
    let url = format!("{}/jewel/{cap}", g.base);
    {
        let mut resp = agent().get(&url).call().unwrap();
        let mut first = [0u8; 4096];
        resp.body_mut().as_reader().read_exact(&mut first).unwrap();
        assert_eq!(me.json(&["status", "--json"])["transfers_running"], 1, "the read is running");
    }
    eventually("the read stopped once its client went", Duration::from_secs(20), || {
        (me.json(&["status", "--json"])["transfers_running"] == 0).then_some(())
    });
    // Ctrl-C (here, a kill) of the command: the gateway is gone.
    let _ = g.child.kill();
    let _ = g.child.wait();
    eventually("the gateway closed", Duration::from_secs(10), || {
        agent().get(&url).call().is_err().then_some(())
    });
}

/// Where a program the tests drive is, or why the test cannot run: CI installs it (see
/// `.ci/run`); `JEWEL_SKIP_CLIENTS=1` skips these tests where it is not installed.
fn client(program: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(program)).find(|p| p.is_file()));
    if found.is_none() {
        assert!(
            std::env::var("JEWEL_SKIP_CLIENTS").is_ok_and(|v| v == "1"),
            "this test drives `{program}`: install it (.ci/run does: apt-get install chromium ffmpeg restic), or set JEWEL_SKIP_CLIENTS=1 to skip"
        );
        eprintln!("skipped: `{program}` is not installed and JEWEL_SKIP_CLIENTS=1");
    }
    found
}

/// A video (made here with ffmpeg) plays and seeks in headless Chromium, fetched from the
/// gateway: the page loads its metadata, seeks to 15 s of 20 and plays on from there.
#[test]
fn a_video_plays_and_seeks_in_headless_chromium() {
    let (Some(ffmpeg), Some(chromium)) = (client("ffmpeg"), client("chromium")) else { return };
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let me = &net.peers[0];
    let video = net.path("clip.webm");
    let made = Command::new(ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=duration=20:size=640x360:rate=25")
        .args(["-c:v", "libvpx", "-b:v", "1500k"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(made.success(), "ffmpeg could not make the video");
    let cap = me.ok(&["put", video.to_str().unwrap(), "--scheme", "replicate:2"]).trim().to_string();
    let g = serve(&me.home);
    let page = net.path("page.html");
    let html = format!(
        r#"<html><head><title>start</title></head><body>
<video id="v" src="{}/jewel/{cap}/clip.webm" muted preload="auto"></video>
<script>
const v = document.getElementById('v');
v.addEventListener('loadedmetadata', () => {{ document.title = 'meta:' + v.duration.toFixed(1); v.currentTime = 15.0; }});
v.addEventListener('seeked', () => {{ document.title = 'seeked:' + v.currentTime.toFixed(1); v.play().catch(() => {{ document.title += ':refused'; }}); }});
v.addEventListener('timeupdate', () => {{ if (v.currentTime > 15.5) document.body.dataset.played = v.currentTime.toFixed(1); }});
v.addEventListener('error', () => {{ document.title = 'error:' + (v.error && v.error.code); }});
</script></body></html>"#,
        g.base
    );
    std::fs::write(&page, html).unwrap();
    let profile = net.path("chromium-profile");
    let out = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=30000", "--dump-dom"])
        .arg(format!("file://{}", page.display()))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<title>seeked:15.0</title>"),
        "the video did not seek: {}",
        &dom[..dom.len().min(400)]
    );
    let played: f64 = dom
        .split("data-played=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the video did not play after the seek: {}", &dom[..dom.len().min(400)]));
    assert!(played > 15.5, "{played}");
}

/// restic backs up to the network through `jewel serve restic`: `init`, `backup`,
/// `snapshots`, `check --read-data` and `restore` pass, and the restored tree is exact. The
/// objects are files of the index (`ls` shows the repository), and the wrong token is
/// refused.
#[test]
fn restic_backs_up_and_restores_through_jewel() {
    let Some(restic) = client("restic") else { return };
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 4, |_| Vec::new());
    let me = &net.peers[0];
    let src = net.path("home");
    for i in 0..40u32 {
        let dir = src.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i}.bin")), random(1000 + 5000 * i as usize, u64::from(i)))
            .unwrap();
    }
    std::fs::write(src.join("big.bin"), random(6 << 20, 99)).unwrap();
    let g = serve_kind(&me.home, &["restic", "--scheme", "replicate:2"]);
    let url = format!("rest:{}/", g.base.replacen("http://", &format!("http://jewel:{}@", g.token), 1));
    let run = |args: &[&str]| {
        let out = Command::new(&restic)
            .args(["-r", &format!("{url}photos/")])
            .args(args)
            .env("RESTIC_PASSWORD", "correct horse")
            .env("RESTIC_CACHE_DIR", net.path("restic-cache"))
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "restic {args:?}: {text}");
        text
    };
    run(&["init"]);
    run(&["backup", "-q", src.to_str().unwrap()]);
    assert!(run(&["snapshots"]).contains("1 snapshots"));
    assert!(run(&["check", "--read-data"]).contains("no errors were found"));
    let back = net.path("restored");
    run(&["restore", "latest", "--target", back.to_str().unwrap()]);
    let restored = back.join(src.strip_prefix("/").unwrap());
    let listing = |dir: &Path| {
        let mut out = Vec::new();
        for e in walk(dir) {
            out.push((e.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&e).unwrap()));
        }
        out.sort();
        out
    };
    assert!(listing(&restored) == listing(&src), "the restored tree differs");
    let listed = me.json(&["ls", "photos", "--json"]);
    let names: Vec<&str> =
        listed["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(names.contains(&"photos/config") && names.contains(&"photos/data"), "{names:?}");
    // The wrong token: refused.
    let wrong = Command::new(&restic)
        .args([
            "-r",
            &format!("rest:{}/photos/", g.base.replacen("http://", "http://jewel:nope@", 1)),
            "snapshots",
        ])
        .env("RESTIC_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A file meant to be read at random (a video a player seeks in) can be put with smaller
/// segments; the gateway reads it by range as any other. A segment size out of bounds gets
/// one line and stores nothing.
#[test]
fn a_file_put_with_small_segments_is_read_by_range() {
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let me = &net.peers[0];
    let data = random(3 << 20, 11);
    let file = net.path("seekable.bin");
    std::fs::write(&file, &data).unwrap();
    let e =
        me.err_line(&["put", file.to_str().unwrap(), "--segment-size", "1KiB", "--scheme", "replicate:2"]);
    assert!(e.contains("segments are 4096 bytes to 64 MiB"), "{e}");
    assert!(me.ok(&["ls"]).trim().is_empty(), "nothing stored");
    let cap = me.ok(&["put", file.to_str().unwrap(), "--segment-size", "512KiB", "--scheme", "replicate:2"]);
    let g = serve(&me.home);
    let (status, _, body) =
        ask("GET", &format!("{}/jewel/{}", g.base, cap.trim()), &[("Range", "bytes=2000000-2262143")]);
    assert_eq!(status, 206);
    assert!(body == data[2_000_000..2_262_144]);
}

/// restic's backend as a stranger finds it: every route needs the token; an object larger
/// than 256 MiB is refused before its body is read, one without a length too; names restic
/// never uses are refused; nothing of it lands in the index.
#[test]
fn the_restic_backend_refuses_what_restic_never_sends() {
    use std::io::Write;
    let _one = exclusive();
    let net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let me = &net.peers[0];
    let g = serve_kind(&me.home, &["restic", "--scheme", "replicate:2"]);
    let id = "ab".repeat(32);
    let raw = |head: &str| -> String {
        let addr = g.base.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let mut got = vec![0u8; 512];
        let n = s.read(&mut got).unwrap_or(0);
        String::from_utf8_lossy(&got[..n]).lines().next().unwrap_or("").to_string()
    };
    let auth = format!("Authorization: Bearer {}\r\n", g.token);
    let huge = format!("POST /repo/data/{id} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 314572800\r\n\r\n");
    assert!(raw(&huge).contains("413"), "an object of 300 MiB");
    let no_length = format!(
        "POST /repo/data/{id} HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    assert!(raw(&no_length).contains("411"), "an object with no length");
    let stranger = format!("POST /repo/data/{id} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    assert!(raw(&stranger).contains("401"), "no token");
    for path in [format!("/repo/other/{id}"), "/repo/data/short".to_string(), format!("/../data/{id}")] {
        let bad = format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 3\r\n\r\nabc");
        let line = raw(&bad);
        assert!(line.contains("400") || line.contains("404"), "{path}: {line}");
    }
    assert!(me.ok(&["ls"]).trim().is_empty(), "nothing stored");
}
