//! `jewel menu`: an interactive terminal menu over a running node, like the prototype's.
//!
//! Items: dir, store, delete, get, the default scheme (show or change), help and quit.
//! The arrow keys (or j/k) move, Enter chooses, and each item's letter chooses it at once;
//! q or Esc quits. The menu itself runs in raw mode; each action leaves raw mode, prints
//! like the matching command (`jewel dir`, `put`, `rm`, `get`), and asks for Enter before
//! the menu comes back. Key handling is a pure function ([`step`]), tested on its own; the
//! whole menu is tested through a pseudo-terminal.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, queue, style, terminal};

use jewel_node::api;

use crate::remote::{self, Api};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Dir,
    Store,
    Delete,
    Get,
    Scheme,
    Help,
    Quit,
}

/// Each item with its shortcut letter and its line.
const ITEMS: [(Item, char, &str); 7] = [
    (Item::Dir, 'd', "dir      what this node stores, and the files it put"),
    (Item::Store, 's', "store    put a file on the network"),
    (Item::Delete, 'x', "delete   release a file this node put"),
    (Item::Get, 'g', "get      fetch a file this node put"),
    (Item::Scheme, 'c', "scheme   show or change the default scheme"),
    (Item::Help, 'h', "help"),
    (Item::Quit, 'q', "quit"),
];

/// A key, as the menu sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Up,
    Down,
    Enter,
    Cancel,
    Char(char),
}

/// What a key does to a list of `len` entries with `selected` highlighted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Move(usize),
    Choose(usize),
    Cancel,
    Stay,
}

/// The menu's key handling: arrows (and j/k) move with wrap-around, Enter chooses the
/// highlighted entry, a shortcut letter chooses its entry, Esc (and q, when it is not a
/// shortcut) cancels.
fn step(selected: usize, len: usize, key: Key, shortcuts: &[char]) -> Step {
    if len == 0 {
        return if key == Key::Enter { Step::Stay } else { Step::Cancel };
    }
    match key {
        Key::Up | Key::Char('k') => Step::Move((selected + len - 1) % len),
        Key::Down | Key::Char('j') => Step::Move((selected + 1) % len),
        Key::Enter => Step::Choose(selected),
        Key::Cancel => Step::Cancel,
        Key::Char(c) => match shortcuts.iter().position(|s| s.eq_ignore_ascii_case(&c)) {
            Some(i) if i < len => Step::Choose(i),
            _ if c == 'q' => Step::Cancel,
            _ => Step::Stay,
        },
    }
}

/// Raw mode for as long as it lives; the terminal is restored however the menu ends.
struct Raw;

impl Raw {
    fn enter() -> Result<Raw> {
        terminal::enable_raw_mode()?;
        execute!(std::io::stdout(), cursor::Hide)?;
        Ok(Raw)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), cursor::Show);
        let _ = terminal::disable_raw_mode();
    }
}

fn read_key() -> Result<Key> {
    loop {
        if let Event::Key(KeyEvent { code, modifiers, kind, .. }) = event::read()? {
            if kind == KeyEventKind::Release {
                continue;
            }
            return Ok(match code {
                KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Key::Cancel,
                KeyCode::Up => Key::Up,
                KeyCode::Down => Key::Down,
                KeyCode::Enter => Key::Enter,
                KeyCode::Esc => Key::Cancel,
                KeyCode::Char(c) => Key::Char(c),
                _ => continue,
            });
        }
    }
}

/// Shows `lines` under `title` and lets the user pick one; `None` if cancelled.
fn pick(title: &str, lines: &[String], shortcuts: &[char]) -> Result<Option<usize>> {
    let _raw = Raw::enter()?;
    let mut selected = 0;
    loop {
        let mut out = std::io::stdout().lock();
        queue!(out, terminal::Clear(terminal::ClearType::All), cursor::MoveTo(0, 0))?;
        write!(out, "{title}\r\n\r\n")?;
        for (i, line) in lines.iter().enumerate() {
            if i == selected {
                queue!(out, style::SetAttribute(style::Attribute::Reverse))?;
                write!(out, "> {line}")?;
                queue!(out, style::SetAttribute(style::Attribute::Reset))?;
                write!(out, "\r\n")?;
            } else {
                write!(out, "  {line}\r\n")?;
            }
        }
        write!(out, "\r\n↑/↓ move · Enter choose · letter = shortcut · q/Esc back\r\n")?;
        out.flush()?;
        drop(out);
        match step(selected, lines.len(), read_key()?, shortcuts) {
            Step::Move(i) => selected = i,
            Step::Choose(i) => return Ok(Some(i)),
            Step::Cancel => return Ok(None),
            Step::Stay => {}
        }
    }
}

/// Asks for one line in the ordinary (cooked) terminal mode; empty means cancel.
fn ask(prompt: &str) -> Result<Option<String>> {
    let mut out = std::io::stdout().lock();
    write!(out, "{prompt}")?;
    out.flush()?;
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let line = line.trim();
    Ok((!line.is_empty()).then(|| line.to_string()))
}

fn pause() -> Result<()> {
    ask("\npress Enter to go back to the menu ")?;
    Ok(())
}

/// The files this node put, as (name, cap, line) for a picker.
fn files(api: &Api) -> Result<Vec<(String, String, String)>> {
    let v = api.fetch::<api::Dir>()?;
    let mut out = Vec::new();
    for (id, f) in v.files {
        let Some(cap) = f.cap else { continue };
        let line =
            format!("{:<24} {:>12} bytes  {:<16} {}", f.name, f.size, f.scheme, id.get(..8).unwrap_or(&id));
        out.push((f.name, cap, line));
    }
    Ok(out)
}

/// Picks one of this node's files; `None` if there are none or the user cancelled.
fn pick_file(api: &Api, what: &str) -> Result<Option<(String, String)>> {
    let list = files(api)?;
    if list.is_empty() {
        outln!("this node has put no files yet; store one first");
        return Ok(None);
    }
    let lines: Vec<String> = list.iter().map(|f| f.2.clone()).collect();
    let Some(i) = pick(&format!("which file to {what}?"), &lines, &[])? else { return Ok(None) };
    Ok(list.into_iter().nth(i).map(|(name, cap, _)| (name, cap)))
}

/// Runs one item; errors are shown and the menu goes on.
fn act(home: &Path, api: &Api, item: Item) -> Result<()> {
    let home = Some(home);
    match item {
        Item::Dir => remote::dir(home, false)?,
        Item::Store => {
            if let Some(path) = ask("file to store (empty to go back): ")? {
                remote::put(home, &PathBuf::from(path), None, None, false, None, false)?;
            }
        }
        Item::Delete => {
            if let Some((name, cap)) = pick_file(api, "delete")? {
                if ask(&format!("release {name}? type yes: "))?.as_deref() == Some("yes") {
                    remote::rm(home, &cap)?;
                }
            }
        }
        Item::Get => {
            if let Some((name, cap)) = pick_file(api, "get")? {
                let out = ask(&format!("save as (empty for ./{name}): "))?.unwrap_or(name);
                let args = remote::GetArgs {
                    cap: &cap,
                    out: Path::new(&out),
                    range: None,
                    json: false,
                    force: false,
                };
                remote::get(home, args)?;
            }
        }
        Item::Scheme => {
            let v = api.fetch::<api::GetSettings>()?;
            outln!("default scheme: {}", v.default_scheme);
            outln!("e.g. jewels:K/N, replicate:N, shard:KxC, parity:K, nested:OUTER+INNER, hosting");
            if let Some(spec) = ask("new default scheme (empty keeps it): ")? {
                let v = api.call::<api::SetSettings>(&api::Settings { default_scheme: spec })?;
                outln!("default scheme is now {}", v.default_scheme);
            }
        }
        Item::Help => {
            outln!(
                "jewel menu drives the node at {}.",
                home.map(|h| h.display().to_string()).unwrap_or_default()
            );
            outln!("  dir     blocks held for peers, the files this node put, space used");
            outln!("  store   encrypts, encodes and spreads a file over peers with the default scheme");
            outln!("  delete  releases one of this node's files");
            outln!("  get     fetches one of this node's files back, verified");
            outln!("  scheme  the scheme `store` uses (see `jewel plan` to choose one)");
            outln!("Arrows or j/k move, Enter chooses, a letter chooses its item, q or Esc quits.");
        }
        Item::Quit => {}
    }
    Ok(())
}

pub fn run(home: Option<&Path>) -> Result<()> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        bail!("jewel menu needs a terminal; use the commands (jewel put/get/dir/rm) in scripts");
    }
    let api = Api::open(home)?;
    let Some(home) = home else { bail!("jewel menu needs --home DIR") };
    let lines: Vec<String> = ITEMS.iter().map(|(_, c, text)| format!("[{c}] {text}")).collect();
    let shortcuts: Vec<char> = ITEMS.iter().map(|(_, c, _)| *c).collect();
    let title = format!("jewel · node {}", home.display());
    loop {
        let item = match pick(&title, &lines, &shortcuts)? {
            None => Item::Quit,
            Some(i) => ITEMS[i].0,
        };
        if item == Item::Quit {
            outln!("bye");
            return Ok(());
        }
        outln!();
        if let Err(e) = act(home, &api, item) {
            outln!("error: {}", format!("{e:#}").replace('\n', " "));
        }
        pause()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [char; 3] = ['a', 'b', 'q'];

    #[test]
    fn arrows_move_with_wrap_around_and_enter_chooses() {
        assert_eq!(step(0, 3, Key::Down, &KEYS), Step::Move(1));
        assert_eq!(step(2, 3, Key::Down, &KEYS), Step::Move(0));
        assert_eq!(step(0, 3, Key::Up, &KEYS), Step::Move(2));
        assert_eq!(step(1, 3, Key::Char('j'), &KEYS), Step::Move(2));
        assert_eq!(step(1, 3, Key::Char('k'), &KEYS), Step::Move(0));
        assert_eq!(step(1, 3, Key::Enter, &KEYS), Step::Choose(1));
    }

    #[test]
    fn letters_choose_their_item_and_escape_cancels() {
        assert_eq!(step(0, 3, Key::Char('b'), &KEYS), Step::Choose(1));
        assert_eq!(step(0, 3, Key::Char('B'), &KEYS), Step::Choose(1));
        assert_eq!(step(0, 3, Key::Char('q'), &KEYS), Step::Choose(2));
        assert_eq!(step(0, 3, Key::Char('z'), &KEYS), Step::Stay);
        assert_eq!(step(0, 3, Key::Cancel, &KEYS), Step::Cancel);
        // In a list without shortcuts, q goes back.
        assert_eq!(step(0, 3, Key::Char('q'), &[]), Step::Cancel);
        assert_eq!(step(0, 0, Key::Down, &[]), Step::Cancel);
    }

    #[test]
    fn every_menu_item_has_its_own_letter() {
        let mut letters: Vec<char> = ITEMS.iter().map(|i| i.1).collect();
        letters.sort_unstable();
        letters.dedup();
        assert_eq!(letters.len(), ITEMS.len());
    }
}
