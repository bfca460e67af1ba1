//! One secret, every device (issue 14, part 1): `jewel id init`, `show` and `recover`
//! through the binary on real node processes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use jewel_testkit::{exclusive, Devnet};

const BIN: &str = env!("CARGO_BIN_EXE_jewel");

/// A user makes an identity on one device, writes down the phrase, and takes the same
/// identity on another device with it; a mistyped phrase is named as such and changes
/// nothing; the identity survives a restart, and its secret is the owner's alone.
#[test]
fn one_phrase_makes_the_same_user_on_every_device() {
    let _one = exclusive();
    let mut net = Devnet::start(Path::new(BIN), 3, |_| Vec::new());
    let (laptop, phone) = (&net.peers[0], &net.peers[1]);
    let e = laptop.err_line(&["id", "show"]);
    assert!(e.contains("holds no user identity"), "{e}");

    let made = laptop.json(&["id", "init", "--json"]);
    let (phrase, user) = (made["phrase"].as_str().unwrap(), made["user"].as_str().unwrap());
    assert_eq!(phrase.split(' ').count(), 24, "{phrase}");
    assert!(user.starts_with("jewel:u1:"), "{user}");
    assert_eq!(laptop.ok(&["id", "show"]).trim(), user);
    let key = laptop.home.join("user.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    // A second init would lose the first identity: refused.
    let e = laptop.err_line(&["id", "init"]);
    assert!(e.contains("already holds user"), "{e}");

    // Mistakes are caught before anything is written.
    let words: Vec<&str> = phrase.split(' ').collect();
    let mut swapped = words.clone();
    swapped.swap(0, 1);
    let mut unknown = words.clone();
    unknown[6] = "jewelry";
    for (typed, says) in [
        (words[..23].join(" "), "has 23 words"),
        (unknown.join(" "), "word 7 of the recovery phrase, `jewelry`"),
        (swapped.join(" "), "checksum does not match"),
    ] {
        if typed == phrase {
            continue; // two equal first words: swapping them changes nothing
        }
        let o = phone.cli().run_fed(&phone.home, &["id", "recover"], typed.as_bytes());
        assert!(!o.success());
        assert!(o.stderr.trim().lines().count() == 1 && o.stderr.contains(says), "{says}: {}", o.stderr);
        assert!(!phone.home.join("user.key").exists(), "nothing written for a wrong phrase");
    }

    // The right phrase, as a user pastes it (any spacing, any case, or the whole numbered
    // block `jewel id init` printed): the same user.
    let printed = laptop.cli().run(&laptop.home, &["id", "show"]);
    assert!(printed.success());
    let numbered: Vec<String> = words.iter().enumerate().map(|(i, w)| format!("{:>2}. {w}", i + 1)).collect();
    let o =
        net.peers[2].cli().run_fed(&net.peers[2].home, &["id", "recover"], numbered.join("  ").as_bytes());
    assert!(o.success(), "{}", o.stderr);
    assert_eq!(o.stdout.trim(), user);
    let pasted = format!("  {}\n", phrase.to_uppercase().replace(' ', "  "));
    let o = phone.cli().run_fed(&phone.home, &["id", "recover"], pasted.as_bytes());
    assert!(o.success(), "{}", o.stderr);
    assert_eq!(o.stdout.trim(), user);
    assert_eq!(phone.ok(&["id", "show"]).trim(), user);
    // Again: nothing changes. Another user's phrase on a node that holds one: refused.
    let o = phone.cli().run_fed(&phone.home, &["id", "recover"], phrase.as_bytes());
    assert!(o.success(), "{}", o.stderr);
    let theirs = jewel::user::UserKey::generate().unwrap().phrase();
    let o = phone.cli().run_fed(&phone.home, &["id", "recover"], theirs.as_bytes());
    assert!(!o.success() && o.stderr.contains("already holds user"), "{}", o.stderr);

    // The secret never shows in a node's log, and the identity outlives a crash (SIGKILL
    // right after init answered: it was on disk before the answer).
    for node in [&net.peers[0], &net.peers[1]] {
        let log = std::fs::read_to_string(node.home.join("node.log")).unwrap_or_default();
        assert!(!words.iter().take(4).all(|w| log.contains(w)), "the phrase is in a log");
    }
    net.peers[0].kill();
    net.peers[0].restart();
    assert_eq!(net.peers[0].ok(&["id", "show"]).trim(), user);
}
