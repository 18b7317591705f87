//! Commands the backends announce that the generated table lacks (a newer
//! Redis's, Valkey's, a module's): read from each backend's `COMMAND INFO`
//! at start and on reload, and routed by the key specs the backend gives,
//! with the key-spec algorithm the proxy has. The generated table
//! (`keyed.rs`) stays the floor and comes first.
//!
//! A command is learned only when every backend announces it alike (the
//! proxy routes what every backend supports), and only with keys: a
//! keyless command may be server-wide, and stays unknown, as do commands
//! Redis files under `@admin` or `@dangerous` (MIGRATE, RESTORE-ASKING,
//! PFDEBUG): what the proxy leaves out on purpose stays out. One whose keys
//! its specs do not tell (a spec flagged `incomplete`, `getkeys-api`, or
//! `movablekeys` without a spec the proxy can follow) is known but refused:
//! with NOPERM under key prefixes, else with an error that names it.
//!
//! Specs are `'static` like the generated ones: each learned name is
//! leaked once, so the memory is bounded by the number of distinct
//! commands ever announced.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::command::{lookup, Begin, Cmd, Find, KeySpec, Route, Spec, Sub};
use super::Reply;

/// What the proxy makes of one announced command.
#[derive(Debug, Clone, Copy)]
pub enum Learned {
    /// Routed by its key specs.
    Routed(&'static Spec),
    /// Its keys cannot be told from its arguments: refused.
    Unsure(&'static str),
}

/// A command's description as one backend announced it, to compare
/// backends and build a spec once.
#[derive(Debug, Clone, PartialEq)]
struct Announced {
    name: String,
    /// In `@admin` or `@dangerous`.
    dangerous: bool,
    arity: i32,
    write: bool,
    blocking: bool,
    keys: (i64, i64, i64),
    specs: Option<Vec<KeySpec>>,
    subs: Vec<Announced>,
}

/// The commands of `replies` (each backend's `COMMAND INFO` reply, parsed)
/// that every backend announces alike and the generated table lacks.
pub fn learn(replies: &[Reply]) -> HashMap<String, Learned> {
    let mut per_backend: Vec<HashMap<String, Announced>> = replies
        .iter()
        .map(|reply| {
            let Reply::Array(items) = reply else {
                return HashMap::new();
            };
            items
                .iter()
                .filter_map(announced)
                .filter(|a| lookup(a.name.as_bytes()).is_none())
                .map(|a| (a.name.clone(), a))
                .collect()
        })
        .collect();
    let Some(first) = per_backend.pop() else {
        return HashMap::new();
    };
    first
        .into_values()
        .filter(|a| {
            per_backend
                .iter()
                .all(|other| other.get(&a.name) == Some(a))
        })
        .filter(|a| has_keys(a) && !a.dangerous)
        .map(|a| {
            let learned = build(&a);
            (a.name, learned)
        })
        .collect()
}

fn has_keys(a: &Announced) -> bool {
    a.specs.as_ref().is_none_or(|s| !s.is_empty()) || a.subs.iter().any(has_keys)
}

/// Leaked once per name: a command announced again reuses its spec.
fn build(a: &Announced) -> Learned {
    static MADE: OnceLock<Mutex<HashMap<String, Learned>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    let Ok(mut made) = made.lock() else {
        return Learned::Unsure("a command the proxy could not learn");
    };
    if let Some(learned) = made.get(&a.name) {
        return *learned;
    }
    let name: &'static str = Box::leak(a.name.clone().into_boxed_str());
    let learned = if a.specs.is_none() || a.subs.iter().any(|s| s.specs.is_none()) {
        Learned::Unsure(name)
    } else {
        let subs: Vec<Sub> = a
            .subs
            .iter()
            .map(|s| Sub {
                name: Box::leak(s.name.clone().into_boxed_str()),
                arity: s.arity,
                write: s.write,
                specs: Box::leak(s.specs.clone().unwrap_or_default().into_boxed_slice()),
            })
            .collect();
        let spec = Spec {
            cmd: Cmd::Keyed,
            name,
            arity: a.arity,
            route: Route::Specs,
            write: a.write,
            no_auth: false,
            blocking: a.blocking,
            keys: a.keys,
            specs: Box::leak(a.specs.clone().unwrap_or_default().into_boxed_slice()),
            subs: Box::leak(subs.into_boxed_slice()),
        };
        Learned::Routed(Box::leak(Box::new(spec)))
    };
    made.insert(a.name.clone(), learned);
    learned
}

/// One command of a `COMMAND INFO` reply: name, arity, flags, first, last,
/// step, ACL categories, tips, key specs, subcommands.
fn announced(reply: &Reply) -> Option<Announced> {
    let Reply::Array(f) = reply else {
        return None;
    };
    let text = |r: &Reply| match r {
        Reply::Bulk(b) | Reply::Status(b) => Some(String::from_utf8_lossy(b).to_ascii_lowercase()),
        _ => None,
    };
    let int = |r: &Reply| match r {
        Reply::Int(i) => Some(*i),
        _ => None,
    };
    let name = text(f.first()?)?;
    let arity = i32::try_from(int(f.get(1)?)?).ok()?;
    let flags: Vec<String> = match f.get(2)? {
        Reply::Array(items) | Reply::Set(items) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    let keys = (int(f.get(3)?)?, int(f.get(4)?)?, int(f.get(5)?)?);
    let raw_specs: &[Reply] = match f.get(8) {
        Some(Reply::Array(items)) => items,
        _ => &[],
    };
    let mut specs = Some(Vec::new());
    for raw in raw_specs {
        match key_spec(raw) {
            Some(KeySpecOrSkip::Spec(spec)) => {
                if let Some(list) = specs.as_mut() {
                    list.push(spec);
                }
            }
            Some(KeySpecOrSkip::NotAKey) => {}
            None => specs = None,
        }
    }
    let movable = flags.iter().any(|f| f == "movablekeys");
    if movable && specs.as_ref().is_none_or(Vec::is_empty) {
        specs = None;
    }
    let dangerous = match f.get(6) {
        Some(Reply::Array(items) | Reply::Set(items)) => items
            .iter()
            .filter_map(text)
            .any(|c| c == "@admin" || c == "@dangerous"),
        _ => false,
    };
    let subs = match f.get(9) {
        Some(Reply::Array(items)) => items.iter().filter_map(announced).collect(),
        _ => Vec::new(),
    };
    Some(Announced {
        name,
        dangerous,
        arity,
        write: flags.iter().any(|f| f == "write"),
        blocking: flags.iter().any(|f| f == "blocking"),
        keys,
        specs,
        subs,
    })
}

enum KeySpecOrSkip {
    Spec(KeySpec),
    /// A spec of something that is not a key (a channel, say).
    NotAKey,
}

/// One key spec, a flat map in RESP2: `None` when the proxy cannot follow
/// it (incomplete, or a search it does not know).
fn key_spec(raw: &Reply) -> Option<KeySpecOrSkip> {
    let map = pairs(raw)?;
    let get = |k: &str| map.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let flags: Vec<String> = match get("flags") {
        Some(Reply::Array(items) | Reply::Set(items)) => items
            .iter()
            .filter_map(|r| match r {
                Reply::Status(b) | Reply::Bulk(b) => {
                    Some(String::from_utf8_lossy(b).to_ascii_lowercase())
                }
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if flags.iter().any(|f| f == "not_key") {
        return Some(KeySpecOrSkip::NotAKey);
    }
    if flags
        .iter()
        .any(|f| f == "incomplete" || f == "variable_flags")
    {
        return None;
    }
    let begin = pairs(get("begin_search")?)?;
    let find = pairs(get("find_keys")?)?;
    let kind = |m: &[(String, &Reply)]| {
        m.iter()
            .find(|(n, _)| n == "type")
            .and_then(|(_, v)| match v {
                Reply::Bulk(b) | Reply::Status(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
    };
    fn spec_of<'a>(m: &[(String, &'a Reply)]) -> Option<Vec<(String, &'a Reply)>> {
        m.iter()
            .find(|(n, _)| n == "spec")
            .and_then(|(_, v)| pairs(v))
    }
    let number = |m: &[(String, &Reply)], k: &str| {
        m.iter().find(|(n, _)| n == k).and_then(|(_, v)| match v {
            Reply::Int(i) => Some(*i),
            _ => None,
        })
    };
    let b = spec_of(&begin)?;
    let begin = match kind(&begin)?.as_str() {
        "index" => Begin::Index(usize::try_from(number(&b, "index")?).ok()?),
        "keyword" => {
            let keyword = b
                .iter()
                .find(|(n, _)| n == "keyword")
                .and_then(|(_, v)| match v {
                    Reply::Bulk(k) | Reply::Status(k) => {
                        Some(String::from_utf8_lossy(k).into_owned())
                    }
                    _ => None,
                })?;
            let keyword: &'static str = Box::leak(keyword.into_boxed_str());
            Begin::Keyword(keyword, i32::try_from(number(&b, "startfrom")?).ok()?)
        }
        _ => return None,
    };
    let k = spec_of(&find)?;
    let find = match kind(&find)?.as_str() {
        "range" => Find::Range {
            last: i32::try_from(number(&k, "lastkey")?).ok()?,
            step: usize::try_from(number(&k, "keystep")?).ok()?,
            limit: usize::try_from(number(&k, "limit")?).ok()?,
        },
        "keynum" => Find::KeyNum {
            at: usize::try_from(number(&k, "keynumidx")?).ok()?,
            first: usize::try_from(number(&k, "firstkey")?).ok()?,
            step: usize::try_from(number(&k, "keystep")?).ok()?,
        },
        _ => return None,
    };
    Some(KeySpecOrSkip::Spec(KeySpec { begin, find }))
}

/// A flat `name, value, ...` array (or a map) as pairs.
fn pairs(raw: &Reply) -> Option<Vec<(String, &Reply)>> {
    match raw {
        Reply::Array(items) => Some(
            items
                .chunks(2)
                .filter_map(|p| match p {
                    [Reply::Bulk(k) | Reply::Status(k), v] => {
                        Some((String::from_utf8_lossy(k).into_owned(), v))
                    }
                    _ => None,
                })
                .collect(),
        ),
        Reply::Map(entries) => Some(
            entries
                .iter()
                .filter_map(|(k, v)| match k {
                    Reply::Bulk(k) | Reply::Status(k) => {
                        Some((String::from_utf8_lossy(k).into_owned(), v))
                    }
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}
