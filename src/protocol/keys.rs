//! Which arguments of a request are keys: exactly the ones Redis's command
//! will touch, so the key prefixes checked, the backend chosen and
//! `COMMAND GETKEYS` all agree with what the server then does.
//!
//! Most commands keep their keys at fixed places, and Redis's key specs
//! ([`Spec::specs`]) say where. The commands whose keys move with their
//! arguments (a key count, a STORE option, the STREAMS keyword) are read
//! here the way the command itself parses its arguments in Redis 7.0
//! (`t_zset.c`, `t_set.c`, `t_list.c`, `geo.c`, `t_stream.c`, `eval.c`),
//! not the way `COMMAND GETKEYS` guesses: Redis's own guess uses `atoi`
//! for a key count the command then refuses, takes the first of several
//! STORE options where the command obeys the last, and finds a STREAMS
//! keyword that is really a consumer's name. Where the arguments do not
//! say for sure which keys the command touches, the request is refused
//! here, with the error the command would give, and reaches no backend.

use std::borrow::Cow;

use super::command::{key_positions, subcommand, Begin, Find, KeySpec, Route, Spec};
use super::Request;

/// Redis's error for a request whose keys cannot be told, in its words.
pub type KeyError = Cow<'static, str>;

const SYNTAX: &str = "ERR syntax error";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const NUMKEYS: &str = "ERR numkeys should be greater than 0";
const TOO_MANY_KEYS: &str = "ERR Number of keys can't be greater than number of args";

/// Where a request's keys are: a range with a step where the command table
/// says so (no allocation on the common path), else listed.
#[derive(Debug)]
pub enum Positions {
    Stepped(std::iter::StepBy<std::ops::Range<usize>>),
    Listed(std::vec::IntoIter<usize>),
}

impl Iterator for Positions {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match self {
            Positions::Stepped(range) => range.next(),
            Positions::Listed(list) => list.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Positions::Stepped(range) => range.size_hint(),
            Positions::Listed(list) => list.size_hint(),
        }
    }
}

impl ExactSizeIterator for Positions {}

/// The positions of `request`'s keys (its arity already checked), or the
/// error its command gives when its arguments do not say which keys.
pub fn positions(spec: &Spec, request: &Request) -> Result<Positions, KeyError> {
    match spec.route {
        Route::Script => {
            let keys = script_keys(spec, request.arg(2).unwrap_or_default(), request.len())?;
            Ok(Positions::Stepped(keys.step_by(1)))
        }
        Route::Specs => {
            let args: Vec<&[u8]> = (0..request.len()).filter_map(|i| request.arg(i)).collect();
            Ok(Positions::Listed(of_args(spec, &args)?.into_iter()))
        }
        _ => Ok(Positions::Stepped(key_positions(spec, request.len()))),
    }
}

/// Every key position of `request`, or none when its arguments are wrong
/// (it is then refused before it reaches a backend).
pub fn request_key_positions(spec: &Spec, request: &Request) -> Vec<usize> {
    positions(spec, request).map_or_else(|_| Vec::new(), Iterator::collect)
}

/// The key positions in `args` (the command name first) of a command
/// routed by its key specs ([`Route::Specs`]).
pub fn of_args(spec: &Spec, args: &[&[u8]]) -> Result<Vec<usize>, KeyError> {
    let specs = match subcommand(spec, args).map_err(Cow::Owned)? {
        Some(sub) => sub.specs,
        None => spec.specs,
    };
    match spec.name {
        // ZUNIONSTORE destination numkeys key [key ...] ...
        "zunionstore" | "zinterstore" | "zdiffstore" => zset_numkeys(spec.name, args, 2, true),
        // ZUNION numkeys key [key ...] ...
        "zunion" | "zinter" | "zdiff" | "zintercard" => zset_numkeys(spec.name, args, 1, false),
        "sintercard" => sintercard(args),
        // LMPOP numkeys key [key ...] LEFT|RIGHT ..., BLMPOP timeout numkeys ...
        "lmpop" | "zmpop" => mpop(args, 1),
        "blmpop" | "bzmpop" => mpop(args, 2),
        // GEORADIUS key longitude latitude radius unit [options]
        "georadius" => georadius(args, 6),
        // GEORADIUSBYMEMBER key member radius unit [options]
        "georadiusbymember" => georadius(args, 5),
        "xread" => xread(args, false),
        "xreadgroup" => xread(args, true),
        "sort" => sort(args, false).map(|s| s.keys),
        "sort_ro" => sort(args, true).map(|s| s.keys),
        _ => spec_keys(specs, args),
    }
}

/// Redis's `string2ll` (see [`super::request::string_to_i64`]): stricter
/// than Rust's `parse`, which takes a plus sign and leading zeros.
pub use super::request::string_to_i64 as string2ll;

/// The keys of a script or function call (`numkeys` at argument 2, the keys
/// after it), or its command's error for a bad `numkeys`.
pub fn script_keys(
    spec: &Spec,
    numkeys: &[u8],
    argc: usize,
) -> Result<std::ops::Range<usize>, KeyError> {
    let function = matches!(spec.name, "fcall" | "fcall_ro");
    let n = string2ll(numkeys).ok_or(if function {
        "ERR Bad number of keys provided"
    } else {
        NOT_INTEGER
    })?;
    if n > argc as i64 - 3 {
        return Err(TOO_MANY_KEYS.into());
    }
    if n < 0 {
        return Err("ERR Number of keys can't be negative".into());
    }
    Ok(3..3 + n as usize)
}

/// ZUNIONSTORE and its kin: `numkeys` at `at`, the keys after it, and the
/// destination at 1 when `store`; as `zunionInterDiffGenericCommand`
/// checks them.
fn zset_numkeys(
    name: &str,
    args: &[&[u8]],
    at: usize,
    store: bool,
) -> Result<Vec<usize>, KeyError> {
    let n = string2ll(args.get(at).copied().unwrap_or_default()).ok_or(NOT_INTEGER)?;
    if n < 1 {
        return Err(format!("ERR at least 1 input key is needed for '{name}' command").into());
    }
    let first = at + 1;
    if n > args.len() as i64 - first as i64 {
        return Err(SYNTAX.into());
    }
    let mut keys = Vec::with_capacity(n as usize + 1);
    if store {
        keys.push(1);
    }
    keys.extend(first..first + n as usize);
    Ok(keys)
}

/// SINTERCARD numkeys key [key ...] [LIMIT limit], as `sinterCardCommand`.
fn sintercard(args: &[&[u8]]) -> Result<Vec<usize>, KeyError> {
    let n = string2ll(args.get(1).copied().unwrap_or_default())
        .filter(|&n| n >= 1)
        .ok_or(NUMKEYS)?;
    if n > args.len() as i64 - 2 {
        return Err(TOO_MANY_KEYS.into());
    }
    Ok((2..2 + n as usize).collect())
}

/// LMPOP / ZMPOP (`numkeys` at 1) and their blocking forms (at 2, after the
/// timeout): the keys, then LEFT|RIGHT or MIN|MAX, as `lmpopGenericCommand`
/// and `zmpopGenericCommand` find them.
fn mpop(args: &[&[u8]], at: usize) -> Result<Vec<usize>, KeyError> {
    let n = string2ll(args.get(at).copied().unwrap_or_default())
        .filter(|&n| n >= 1)
        .ok_or(NUMKEYS)?;
    // The direction follows the keys; a count past the arguments leaves
    // no room for it.
    if n >= args.len() as i64 - at as i64 - 1 {
        return Err(SYNTAX.into());
    }
    Ok((at + 1..at + 1 + n as usize).collect())
}

/// GEORADIUS and GEORADIUSBYMEMBER: the key, and the destination of the
/// last STORE or STOREDIST (each replaces the one before), reading the
/// options from `base` on as `georadiusGeneric` does.
fn georadius(args: &[&[u8]], base: usize) -> Result<Vec<usize>, KeyError> {
    let mut store = None;
    let mut i = base;
    while i < args.len() {
        let arg = args[i];
        let has_value = i + 1 < args.len();
        let is = |word: &str| arg.eq_ignore_ascii_case(word.as_bytes());
        if ["withdist", "withhash", "withcoord", "any", "asc", "desc"]
            .iter()
            .any(|w| is(w))
        {
        } else if is("count") && has_value {
            let count = string2ll(args[i + 1]).ok_or(NOT_INTEGER)?;
            if count <= 0 {
                return Err("ERR COUNT must be > 0".into());
            }
            i += 1;
        } else if (is("store") || is("storedist")) && has_value {
            store = Some(i + 1);
            i += 1;
        } else {
            return Err(SYNTAX.into());
        }
        i += 1;
    }
    Ok(std::iter::once(1).chain(store).collect())
}

/// What SORT reads and writes besides its key: the keys of its BY and GET
/// patterns (`*` replaced by each element) and its STORE destination.
#[derive(Debug, PartialEq, Eq)]
pub struct Sorting {
    /// The key, then the destination of the last STORE.
    pub keys: Vec<usize>,
    /// Positions of BY patterns with a `*` and of GET patterns other than
    /// `#` (the element itself): each names keys the arguments do not.
    pub patterns: Vec<usize>,
}

/// SORT and SORT_RO, read as `sortCommandGeneric` reads them.
pub fn sort(args: &[&[u8]], read_only: bool) -> Result<Sorting, KeyError> {
    let mut sorting = Sorting {
        keys: vec![1],
        patterns: Vec::new(),
    };
    let mut store = None;
    let mut i = 2;
    while i < args.len() {
        let left = args.len() - i - 1;
        let arg = args[i];
        let is = |word: &str| arg.eq_ignore_ascii_case(word.as_bytes());
        if is("asc") || is("desc") || is("alpha") {
        } else if is("limit") && left >= 2 {
            if string2ll(args[i + 1]).is_none() || string2ll(args[i + 2]).is_none() {
                return Err(NOT_INTEGER.into());
            }
            i += 2;
        } else if !read_only && is("store") && left >= 1 {
            store = Some(i + 1);
            i += 1;
        } else if is("by") && left >= 1 {
            if args[i + 1].contains(&b'*') {
                sorting.patterns.push(i + 1);
            }
            i += 1;
        } else if is("get") && left >= 1 {
            if args[i + 1] != b"#" {
                sorting.patterns.push(i + 1);
            }
            i += 1;
        } else {
            return Err(SYNTAX.into());
        }
        i += 1;
    }
    sorting.keys.extend(store);
    Ok(sorting)
}

/// XREAD and XREADGROUP: the stream keys after STREAMS, once the options
/// before it are read as `xreadCommand` reads them (a GROUP's names or a
/// COUNT may be the word STREAMS too).
fn xread(args: &[&[u8]], group: bool) -> Result<Vec<usize>, KeyError> {
    let mut streams = None;
    let mut grouped = false;
    let mut i = 1;
    while i < args.len() {
        let more = args.len() - i - 1;
        let arg = args[i];
        let is = |word: &str| arg.eq_ignore_ascii_case(word.as_bytes());
        if (is("BLOCK") || is("COUNT")) && more > 0 {
            i += 1;
        } else if is("STREAMS") && more > 0 {
            if !more.is_multiple_of(2) {
                return Err("ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.".into());
            }
            streams = Some((i + 1, more / 2));
            break;
        } else if is("GROUP") && more >= 2 {
            if !group {
                return Err(
                    "ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead."
                        .into(),
                );
            }
            grouped = true;
            i += 2;
        } else if is("NOACK") {
            if !group {
                return Err(
                    "ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead."
                        .into(),
                );
            }
        } else {
            return Err(SYNTAX.into());
        }
        i += 1;
    }
    let (first, count) = streams.ok_or(SYNTAX)?;
    if group && !grouped {
        return Err("ERR Missing GROUP option for XREADGROUP".into());
    }
    Ok((first..first + count).collect())
}

/// The positions of the keys that `specs` find in `args`, as Redis's
/// `getKeysUsingKeySpecs` finds them. A key count that is not one makes
/// the request one whose keys cannot be told: refused.
pub fn spec_keys(specs: &[KeySpec], args: &[&[u8]]) -> Result<Vec<usize>, KeyError> {
    let invalid = || Cow::Borrowed("ERR Invalid arguments specified for command");
    let argc = args.len() as i64;
    let mut keys = Vec::new();
    for spec in specs {
        let first = match spec.begin {
            Begin::Index(at) => at as i64,
            Begin::Keyword(keyword, startfrom) => {
                let found = if startfrom > 0 {
                    (startfrom as i64..argc - 1)
                        .find(|&i| args[i as usize].eq_ignore_ascii_case(keyword.as_bytes()))
                } else {
                    let start = argc + startfrom as i64;
                    (1..=start).rev().find(|&i| {
                        i < argc && args[i as usize].eq_ignore_ascii_case(keyword.as_bytes())
                    })
                };
                match found {
                    Some(i) => i + 1,
                    None => continue,
                }
            }
        };
        let (first, last, step) = match spec.find {
            Find::Range { last, step, limit } => {
                let last = if last >= 0 {
                    first + last as i64
                } else if limit == 0 {
                    argc + last as i64
                } else {
                    first + ((argc - first) / limit as i64 + last as i64)
                };
                (first, last, step)
            }
            Find::KeyNum {
                at,
                first: from,
                step,
            } => {
                let count = args
                    .get((first + at as i64) as usize)
                    .and_then(|n| string2ll(n))
                    .filter(|&n| n >= 0)
                    .ok_or_else(invalid)?;
                let first = first + from as i64;
                // A huge count (a client's number) must not overflow: it
                // only has to end past the arguments.
                (first, first.saturating_add(count - 1), step)
            }
        };
        // A range past the arguments, or empty (PFMERGE with no source),
        // names no keys here and touches none there; Redis's own GETKEYS
        // refuses to answer for it, but the command runs.
        if last >= argc || last < first || first >= argc {
            continue;
        }
        let mut i = first;
        while i <= last {
            keys.push(i as usize);
            i += step.max(1) as i64;
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::lookup;

    /// Key positions as the command itself finds them, or its error.
    fn keys_of(words: &str) -> Result<Vec<usize>, String> {
        let args: Vec<&[u8]> = words.split(' ').map(str::as_bytes).collect();
        let spec = lookup(args[0]).unwrap();
        let request = Request::Inline(
            args.iter()
                .map(|a| bytes::Bytes::copy_from_slice(a))
                .collect(),
        );
        positions(spec, &request)
            .map(Iterator::collect)
            .map_err(|e| e.into_owned())
    }

    #[test]
    fn numbers_as_redis_reads_them() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"-12"), Some(-12));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"+2",
            b"02",
            b"2 ",
            b" 2",
            b"-",
            b"-0",
            b"9223372036854775808",
            b"99999999999999999999",
            b"1e3",
        ] {
            assert_eq!(string2ll(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn key_specs_find_keys_as_redis_does() {
        assert_eq!(
            keys_of("zunionstore d 2 a b weights 1 2"),
            Ok(vec![1, 3, 4])
        );
        assert_eq!(keys_of("zunion 2 a b"), Ok(vec![2, 3]));
        assert_eq!(keys_of("lmove a b left right"), Ok(vec![1, 2]));
        assert_eq!(keys_of("xread count 2 streams s1 s2 0 0"), Ok(vec![4, 5]));
        assert_eq!(keys_of("xread block 0 streams s1 $"), Ok(vec![4]));
        assert_eq!(keys_of("xreadgroup group g c streams s1 >"), Ok(vec![5]));
        assert_eq!(keys_of("blmpop 0 2 a b left"), Ok(vec![3, 4]));
        assert_eq!(keys_of("georadius g 0 0 1 km store dst"), Ok(vec![1, 7]));
        assert_eq!(keys_of("xgroup create s g $"), Ok(vec![2]));
        assert_eq!(keys_of("memory usage k"), Ok(vec![2]));
        assert_eq!(keys_of("hset h f v f2 v2"), Ok(vec![1]));
        assert_eq!(keys_of("msetnx a 1 b 2"), Ok(vec![1, 3]));
        assert_eq!(keys_of("blpop a b 0"), Ok(vec![1, 2]));
        assert_eq!(keys_of("sintercard 2 a b limit 3"), Ok(vec![2, 3]));
        assert_eq!(keys_of("eval s 2 a b c"), Ok(vec![3, 4]));
    }

    /// The forms that `COMMAND GETKEYS` (and key specs alone) get wrong,
    /// read as the command reads them: the last STORE wins, and a STREAMS
    /// that is a consumer's name is not the keyword.
    #[test]
    fn movable_keys_follow_the_command_not_the_guess() {
        assert_eq!(
            keys_of("georadius g 0 0 500 km store a store b"),
            Ok(vec![1, 9])
        );
        assert_eq!(
            keys_of("georadius g 0 0 500 km store a storedist b count 1"),
            Ok(vec![1, 9])
        );
        assert_eq!(
            keys_of("georadiusbymember g m 500 km storedist a store b"),
            Ok(vec![1, 8])
        );
        // COUNT's value is not an option, even when it reads STORE.
        assert_eq!(
            keys_of("georadius g 0 0 5 km count store"),
            Err(NOT_INTEGER.into())
        );
        assert_eq!(
            keys_of("xreadgroup count 1 group g streams streams k1 k2 > >"),
            Ok(vec![7, 8])
        );
        assert_eq!(
            keys_of("xreadgroup group streams streams streams k >"),
            Ok(vec![5])
        );
    }

    #[test]
    fn sort_names_its_store_and_its_patterns() {
        let args = |s: &'static str| s.split(' ').map(str::as_bytes).collect::<Vec<_>>();
        assert_eq!(
            sort(
                &args("sort l by w_* get # get o_*->f store a limit 0 1 store b alpha"),
                false
            ),
            Ok(Sorting {
                keys: vec![1, 14],
                patterns: vec![3, 7]
            })
        );
        assert_eq!(
            sort(&args("sort l by nosort desc"), false),
            Ok(Sorting {
                keys: vec![1],
                patterns: vec![]
            })
        );
        assert_eq!(sort(&args("sort_ro l store a"), true), Err(SYNTAX.into()));
        assert_eq!(
            sort(&args("sort l limit 0 x"), false),
            Err(NOT_INTEGER.into())
        );
        assert_eq!(keys_of("sort l store a store b"), Ok(vec![1, 5]));
    }

    #[test]
    fn unsure_keys_are_refused_with_the_commands_error() {
        let err = |s: &str| Err::<Vec<usize>, String>(s.to_string());
        let spaced: Vec<&[u8]> = vec![b"zunionstore", b"d", b"2 ", b"a", b"b"];
        let spec = lookup(b"zunionstore").unwrap();
        assert_eq!(of_args(spec, &spaced), Err(NOT_INTEGER.into()));
        assert_eq!(keys_of("zunionstore d +2 a b"), err(NOT_INTEGER));
        assert_eq!(keys_of("zunionstore d 02 a b"), err(NOT_INTEGER));
        assert_eq!(
            keys_of("zunionstore d 0 a"),
            err("ERR at least 1 input key is needed for 'zunionstore' command")
        );
        assert_eq!(
            keys_of("zunionstore d -1 a"),
            err("ERR at least 1 input key is needed for 'zunionstore' command")
        );
        assert_eq!(
            keys_of("zunionstore d 99999999999999999999 a"),
            err(NOT_INTEGER)
        );
        assert_eq!(keys_of("zunion 5 a"), err(SYNTAX));
        assert_eq!(keys_of("sintercard -1 a"), err(NUMKEYS));
        assert_eq!(keys_of("sintercard 3 a b"), err(TOO_MANY_KEYS));
        assert_eq!(keys_of("lmpop 9223372036854775807 a left"), err(SYNTAX));
        assert_eq!(keys_of("lmpop 2 a left"), err(SYNTAX));
        assert_eq!(keys_of("blmpop 0 x a left"), err(NUMKEYS));
        assert!(keys_of("xread streams a b c")
            .unwrap_err()
            .contains("Unbalanced"));
        assert_eq!(keys_of("xread count 1 a 0"), err(SYNTAX));
        assert_eq!(
            keys_of("xreadgroup streams a 0"),
            err("ERR Missing GROUP option for XREADGROUP")
        );
        assert!(keys_of("xread group g c streams a 0")
            .unwrap_err()
            .contains("only supported by XREADGROUP"));
        assert_eq!(keys_of("georadius g 0 0 5 km store"), err(SYNTAX));
        assert_eq!(keys_of("georadius g 0 0 5 km bogus"), err(SYNTAX));
        assert_eq!(keys_of("eval s +1 a"), err(NOT_INTEGER));
        assert_eq!(keys_of("eval s 2 a"), err(TOO_MANY_KEYS));
        assert_eq!(
            keys_of("fcall f x a"),
            err("ERR Bad number of keys provided")
        );
    }

    /// Random arguments, numbers and keywords among them, for every keyed
    /// command: key lookup never panics and never names a position past
    /// the arguments.
    #[test]
    fn key_lookup_is_total_over_random_arguments() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let words: &[&[u8]] = &[
            b"0",
            b"1",
            b"2",
            b"-1",
            b"9223372036854775807",
            b"-9223372036854775808",
            b"99999999999999999999",
            b"STREAMS",
            b"streams",
            b"STORE",
            b"BLOCK",
            b"GROUP",
            b"x",
            b"",
            b"create",
            b"stream",
            b"usage",
            b"help",
        ];
        for spec in super::super::keyed::KEYED {
            for _ in 0..200 {
                let argc = rng.random_range(1..9);
                let mut args: Vec<&[u8]> = vec![spec.name.as_bytes()];
                for _ in 1..argc {
                    args.push(words[rng.random_range(0..words.len())]);
                }
                if !spec.arity_ok(args.len()) {
                    continue;
                }
                if let Ok(keys) = of_args(spec, &args) {
                    for position in keys {
                        assert!(position > 0 && position < args.len(), "{args:?}");
                    }
                }
            }
        }
    }
}
