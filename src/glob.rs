//! Redis's glob-style match (`stringmatchlen`): `*`, `?`, `[...]` with
//! ranges and `^`, `\` escapes. CONFIG GET and COMMAND LIST match without
//! case; channel permissions (`channels = [...]`, Redis's ACL `&pattern`)
//! with it. Iterative: the backtracking is over the last `*` only, so it is
//! linear in practice and never recursive.

/// Whether letters must match in case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Exact,
    Ignore,
}

/// The pattern that matches every name starting with `prefix`: the
/// prefix with its special characters escaped, then `*`.
pub fn prefix_pattern(prefix: &[u8]) -> Vec<u8> {
    let mut pattern = Vec::with_capacity(prefix.len() + 1);
    for &b in prefix {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(b);
    }
    pattern.push(b'*');
    pattern
}

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &[u8], name: &[u8], case: Case) -> bool {
    let fold = |b: u8| match case {
        Case::Ignore => b.to_ascii_lowercase(),
        Case::Exact => b,
    };
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pattern, p, fold(name[n]), fold),
            Some(b'\\') if p + 1 < pattern.len() => {
                (fold(pattern[p + 1]) == fold(name[n])).then_some(p + 2)
            }
            Some(&c) => (fold(c) == fold(name[n])).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `pattern[start]` against `c` (already folded): the
/// index after it when it matches.
fn class(pattern: &[u8], start: usize, c: u8, fold: impl Fn(u8) -> u8) -> Option<usize> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= fold(pattern[i + 1]) == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (a, b) = (fold(pattern[i]), fold(pattern[i + 2]));
            matched |= a.min(b) <= c && c <= a.max(b);
            i += 3;
        } else {
            matched |= fold(pattern[i]) == c;
            i += 1;
        }
    }
    (matched != negate).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_pattern_matches_exactly_the_names_under_the_prefix() {
        let pattern = prefix_pattern(b"s[1]*?\\:");
        assert_eq!(pattern, b"s\\[1\\]\\*\\?\\\\:*".to_vec());
        assert!(matches(&pattern, b"s[1]*?\\:abc", Case::Exact));
        assert!(matches(&pattern, b"s[1]*?\\:", Case::Exact));
        assert!(!matches(&pattern, b"s1x?\\:abc", Case::Exact));
        assert!(!matches(&pattern, b"other", Case::Exact));
    }

    #[test]
    fn globs_match_like_redis() {
        let m = |p: &str, n: &str| matches(p.as_bytes(), n.as_bytes(), Case::Ignore);
        assert!(m("*", "maxclients"));
        assert!(m("max*", "maxmemory-policy"));
        assert!(m("MAXCLIENTS", "maxclients"));
        assert!(m("*slower*", "slowlog-log-slower-than"));
        assert!(m("d?tabases", "databases"));
        assert!(m("[a-d]atabases", "databases"));
        assert!(!m("[^d]atabases", "databases"));
        assert!(!m("max", "maxclients"));
        assert!(!m("*x", "maxclients"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*a*a*a*", "aaaa"));
        assert!(!m("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }

    #[test]
    fn channels_match_in_case() {
        let m = |p: &str, n: &str| matches(p.as_bytes(), n.as_bytes(), Case::Exact);
        assert!(m("session:alice:*", "session:alice:x"));
        assert!(!m("session:alice:*", "SESSION:alice:x"));
        assert!(m("__keyspace@*__:session:a*", "__keyspace@0__:session:a1"));
        assert!(!m("__keyspace@*__:session:a*", "__keyspace@0__:session:b1"));
    }
}
