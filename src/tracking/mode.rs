//! A client's CLIENT TRACKING settings as Redis 7 keeps them, and the
//! commands that read and change them (TRACKING, CACHING, GETREDIR,
//! TRACKINGINFO), with Redis's replies and error wording
//! (`networking.c`'s `clientCommand`, `tracking.c`). Pure: whether a
//! redirect target exists is asked of the caller.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::protocol::request::string_to_i64;
use crate::protocol::{RedisError, Reply};

/// One client's tracking settings (Redis's `CLIENT_TRACKING*` flags, its
/// redirect and its broadcast prefixes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mode {
    pub on: bool,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    /// CLIENT CACHING YES (OPTIN) or NO (OPTOUT) was given for the next
    /// command (or the next transaction).
    pub caching: bool,
    /// The redirect target went away (`broken_redirect`, flag `R`).
    pub broken_redirect: bool,
    /// The client invalidations go to; 0: this client.
    pub redirect: u64,
    /// BCAST prefixes, in Redis's (byte) order; `""` when none was named.
    pub prefixes: BTreeSet<Bytes>,
}

/// What CLIENT TRACKING asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Options {
    redirect: u64,
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    prefixes: Vec<Bytes>,
}

fn error(msg: &str) -> Reply {
    Reply::error(format!("ERR {msg}"))
}

impl Mode {
    /// CLIENT TRACKING `args[2..]`: the settings changed, or Redis's error
    /// (and nothing changed). `exists` says whether a client id is
    /// connected, for REDIRECT.
    pub fn tracking(&mut self, args: &[Bytes], exists: impl Fn(u64) -> bool) -> Result<(), Reply> {
        let options = parse(args, exists)?;
        if args[2].eq_ignore_ascii_case(b"on") {
            self.check(&options)?;
            self.enable(options);
        } else if args[2].eq_ignore_ascii_case(b"off") {
            self.disable();
        } else {
            return Err(RedisError::Syntax.reply());
        }
        Ok(())
    }

    /// Redis's checks before tracking is turned on, in its order.
    fn check(&self, o: &Options) -> Result<(), Reply> {
        if !o.bcast && !o.prefixes.is_empty() {
            return Err(error("PREFIX option requires BCAST mode to be enabled"));
        }
        if self.on && self.bcast != o.bcast {
            return Err(error("You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."));
        }
        if o.bcast && (o.optin || o.optout) {
            return Err(error("OPTIN and OPTOUT are not compatible with BCAST"));
        }
        if o.optin && o.optout {
            return Err(error("You can't specify both OPTIN mode and OPTOUT mode"));
        }
        if (o.optin && self.optout) || (o.optout && self.optin) {
            return Err(error("You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode."));
        }
        if o.bcast {
            self.check_prefixes(&o.prefixes)?;
        }
        Ok(())
    }

    /// No two prefixes of one client may overlap (one a prefix of the
    /// other), the new ones against those it has and among themselves.
    fn check_prefixes(&self, prefixes: &[Bytes]) -> Result<(), Reply> {
        let overlap = |a: &[u8], b: &[u8]| {
            let n = a.len().min(b.len());
            a[..n] == b[..n]
        };
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        for (i, new) in prefixes.iter().enumerate() {
            if let Some(old) = self.prefixes.iter().find(|old| overlap(old, new)) {
                return Err(error(&format!(
                    "Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                    show(new),
                    show(old)
                )));
            }
            if let Some(other) = prefixes[i + 1..].iter().find(|o| overlap(new, o)) {
                return Err(error(&format!(
                    "Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                    show(new),
                    show(other)
                )));
            }
        }
        Ok(())
    }

    /// Redis's `enableTracking`: the mode flags are replaced, prefixes
    /// added to those the client has.
    fn enable(&mut self, o: Options) {
        self.on = true;
        self.broken_redirect = false;
        self.redirect = o.redirect;
        self.bcast = o.bcast;
        if o.bcast {
            if o.prefixes.is_empty() {
                self.prefixes.insert(Bytes::new());
            }
            self.prefixes.extend(o.prefixes);
        }
        self.optin = o.optin;
        self.optout = o.optout;
        self.noloop = o.noloop;
    }

    /// Redis's `disableTracking` (CLIENT TRACKING OFF, RESET).
    pub fn disable(&mut self) {
        let redirect = self.redirect;
        *self = Mode {
            redirect,
            ..Mode::default()
        };
    }

    /// CLIENT CACHING YES|NO (`args[2]`; more arguments are ignored, as
    /// Redis does).
    pub fn caching(&mut self, args: &[Bytes]) -> Reply {
        if !self.on {
            return error("CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
        }
        let opt = &args[2];
        if opt.eq_ignore_ascii_case(b"yes") {
            if !self.optin {
                return error(
                    "CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
                );
            }
        } else if opt.eq_ignore_ascii_case(b"no") {
            if !self.optout {
                return error(
                    "CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
                );
            }
        } else {
            return RedisError::Syntax.reply();
        }
        self.caching = true;
        Reply::ok()
    }

    /// CLIENT GETREDIR, and `redir=` in CLIENT LIST: -1 when tracking is
    /// off, else the redirect (0: none).
    pub fn redirect_shown(&self) -> i64 {
        if self.on {
            self.redirect as i64
        } else {
            -1
        }
    }

    /// CLIENT TRACKINGINFO.
    pub fn info(&self) -> Reply {
        let mut flags = vec![if self.on { "on" } else { "off" }];
        if self.bcast {
            flags.push("bcast");
        }
        if self.optin {
            flags.push("optin");
            if self.caching {
                flags.push("caching-yes");
            }
        }
        if self.optout {
            flags.push("optout");
            if self.caching {
                flags.push("caching-no");
            }
        }
        if self.noloop {
            flags.push("noloop");
        }
        if self.broken_redirect {
            flags.push("broken_redirect");
        }
        let bulk = |s: &'static str| Reply::Bulk(Bytes::from_static(s.as_bytes()));
        Reply::Map(vec![
            (
                bulk("flags"),
                Reply::Set(flags.into_iter().map(bulk).collect()),
            ),
            (bulk("redirect"), Reply::Int(self.redirect_shown())),
            (
                bulk("prefixes"),
                Reply::Array(self.prefixes.iter().cloned().map(Reply::Bulk).collect()),
            ),
        ])
    }

    /// Whether a read-only command's keys are remembered for this client
    /// now (default mode; OPTIN after CACHING YES, OPTOUT unless CACHING
    /// NO).
    pub fn remembers(&self) -> bool {
        // Redis's `trackingRememberKeys`: OPTIN needs CACHING YES, OPTOUT
        // is stopped by CACHING NO.
        let opted_out = if self.optin {
            !self.caching
        } else {
            self.optout && self.caching
        };
        self.on && !self.bcast && !opted_out
    }

    /// CLIENT LIST's tracking flags, in Redis's order: `t`, `R`, `B`.
    pub fn list_flags(&self) -> u8 {
        u8::from(self.on) | u8::from(self.broken_redirect) << 1 | u8::from(self.bcast) << 2
    }
}

/// Parses the options after ON|OFF as Redis does, REDIRECT checked at once.
fn parse(args: &[Bytes], exists: impl Fn(u64) -> bool) -> Result<Options, Reply> {
    let mut o = Options::default();
    let mut j = 3;
    while j < args.len() {
        let more = j + 1 < args.len();
        let arg = &args[j];
        if arg.eq_ignore_ascii_case(b"redirect") && more {
            j += 1;
            if o.redirect != 0 {
                return Err(error("A client can only redirect to a single other client"));
            }
            let id = string_to_i64(&args[j]).ok_or_else(|| RedisError::NotAnInteger.reply())?;
            if id <= 0 || !exists(id as u64) {
                return Err(error("The client ID you want redirect to does not exist"));
            }
            o.redirect = id as u64;
        } else if arg.eq_ignore_ascii_case(b"bcast") {
            o.bcast = true;
        } else if arg.eq_ignore_ascii_case(b"optin") {
            o.optin = true;
        } else if arg.eq_ignore_ascii_case(b"optout") {
            o.optout = true;
        } else if arg.eq_ignore_ascii_case(b"noloop") {
            o.noloop = true;
        } else if arg.eq_ignore_ascii_case(b"prefix") && more {
            j += 1;
            o.prefixes.push(args[j].clone());
        } else {
            return Err(RedisError::Syntax.reply());
        }
        j += 1;
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    fn err(r: Result<(), Reply>) -> String {
        match r {
            Err(Reply::Error(e)) => String::from_utf8_lossy(&e).into_owned(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn default_mode_remembers_reads() {
        let mut m = Mode::default();
        assert!(!m.remembers());
        m.tracking(&args("CLIENT TRACKING on"), |_| false).unwrap();
        assert!(m.remembers());
        assert_eq!(m.redirect_shown(), 0);
        m.tracking(&args("CLIENT TRACKING off"), |_| false).unwrap();
        assert!(!m.remembers());
        assert_eq!(m.redirect_shown(), -1);
    }

    #[test]
    fn optin_and_optout_follow_caching() {
        let mut m = Mode::default();
        m.tracking(&args("CLIENT TRACKING on OPTIN"), |_| false)
            .unwrap();
        assert!(!m.remembers());
        assert_eq!(m.caching(&args("CLIENT CACHING yes")), Reply::ok());
        assert!(m.remembers());
        let mut m = Mode::default();
        m.tracking(&args("CLIENT TRACKING on OPTOUT"), |_| false)
            .unwrap();
        assert!(m.remembers());
        assert_eq!(m.caching(&args("CLIENT CACHING no")), Reply::ok());
        assert!(!m.remembers());
        assert!(matches!(
            m.caching(&args("CLIENT CACHING yes")),
            Reply::Error(_)
        ));
    }

    #[test]
    fn redis_refusals() {
        let mut m = Mode::default();
        assert_eq!(
            err(m.tracking(&args("CLIENT TRACKING on PREFIX a"), |_| true)),
            "ERR PREFIX option requires BCAST mode to be enabled"
        );
        assert_eq!(
            err(m.tracking(&args("CLIENT TRACKING on REDIRECT 99"), |_| false)),
            "ERR The client ID you want redirect to does not exist"
        );
        assert_eq!(
            err(m.tracking(&args("CLIENT TRACKING on BCAST OPTIN"), |_| false)),
            "ERR OPTIN and OPTOUT are not compatible with BCAST"
        );
        assert_eq!(
            err(m.tracking(&args("CLIENT TRACKING on foo"), |_| false)),
            "ERR syntax error"
        );
        m.tracking(&args("CLIENT TRACKING on BCAST PREFIX ab"), |_| false)
            .unwrap();
        assert_eq!(
            err(m.tracking(&args("CLIENT TRACKING on BCAST PREFIX a"), |_| false)),
            "ERR Prefix 'a' overlaps with an existing prefix 'ab'. Prefixes for a single client must not overlap."
        );
        assert!(err(m.tracking(&args("CLIENT TRACKING on"), |_| false)).contains("BCAST mode"));
        assert_eq!(m.list_flags(), 0b101);
    }
}
