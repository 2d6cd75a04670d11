//! The host's one query-string parser and one percent-decoder: container requests,
//! session params and the MCM API's query parameters all read queries here.

use std::collections::BTreeMap;

/// Percent-decodes `text`; `+` becomes a space when `plus_is_space` (query strings),
/// and stays a `+` otherwise (path segments). Invalid escapes are kept as they are.
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            (b'+', _, _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `(name, value)` pairs of `a=1&b=x+y`, in order; a bare `name` has
/// the value `""`.
pub fn pairs(text: &str) -> impl Iterator<Item = (String, String)> + '_ {
    text.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true), percent_decode(v, true))
    })
}

/// Parses `a=1&b=x+y` into a map (last value wins).
pub fn parse_query(text: &str) -> BTreeMap<String, String> {
    pairs(text).collect()
}

/// The last value of parameter `name`, if present.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    pairs(query.unwrap_or(""))
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v)
        .last()
}

/// The boolean parameter `name`: absent is false; `true`/`1`/`yes` (or a bare
/// `name`) and `false`/`0`/`no`; anything else is an error naming the value.
pub fn flag(query: Option<&str>, name: &str) -> Result<bool, String> {
    match param(query, name)
        .map(|v| v.to_ascii_lowercase())
        .as_deref()
    {
        None => Ok(false),
        Some("true" | "1" | "yes" | "") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(format!(
            "query parameter {name}={other:?} is not a boolean (use true or false)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_decode() {
        let q = parse_query("a=1&b=x+y&c=%2Fz&d");
        assert_eq!(q["a"], "1");
        assert_eq!(q["b"], "x y");
        assert_eq!(q["c"], "/z");
        assert_eq!(q["d"], "");
        assert_eq!(percent_decode("my-mim%3Alatest", false), "my-mim:latest");
        assert_eq!(percent_decode("a+b", false), "a+b");
        assert_eq!(percent_decode("bad%zz%", false), "bad%zz%");
        assert_eq!(
            param(Some("limit=3&limit=4"), "limit").as_deref(),
            Some("4")
        );
    }

    #[test]
    fn flags_read_like_people_write_them() {
        assert_eq!(flag(Some("purge=true"), "purge"), Ok(true));
        assert_eq!(flag(Some("a=1&purge"), "purge"), Ok(true));
        assert_eq!(flag(Some("purge=false"), "purge"), Ok(false));
        assert_eq!(flag(None, "purge"), Ok(false));
        assert!(flag(Some("purge=maybe"), "purge").is_err());
    }
}
