//! Refuses source nested deeper than the parser can take before Boa ever sees it.
//!
//! Boa's parser recurses once per bracket level and overflows the native stack on deep
//! input, which aborts the process; counting brackets first is cheap and exact enough.

/// Deepest bracket nesting accepted in a mim's source.
pub const MAX_SOURCE_NESTING: usize = 1_000;

/// Where a source file first nests too deep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    /// 1-based line of the bracket that went over the limit.
    pub line: usize,
    /// 1-based column of that bracket.
    pub column: usize,
}

/// Checks that `source` never nests `(`, `[` or `{` deeper than `limit`, skipping
/// strings, template text and comments.
pub fn check_nesting(source: &str, limit: usize) -> Result<(), TooDeep> {
    let bytes = source.as_bytes();
    let (mut depth, mut line, mut line_start, mut i) = (0usize, 1usize, 0usize, 0usize);
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(TooDeep {
                        line,
                        column: i - line_start + 1,
                    });
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'"' | b'\'' | b'`' => i = skip_string(bytes, i, &mut line, &mut line_start),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    if bytes[i] == b'\n' {
                        line += 1;
                        line_start = i + 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Returns the index of the quote closing the string that opens at `start`.
fn skip_string(bytes: &[u8], start: usize, line: &mut usize, line_start: &mut usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() && bytes[i] != quote {
        if bytes[i] == b'\\' {
            i += 1;
        } else if bytes[i] == b'\n' {
            if quote != b'`' {
                return i;
            }
            *line += 1;
            *line_start = i + 1;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_code() {
        assert!(check_nesting("function f(a) { return [a, {b: (1)}]; }", 4).is_ok());
    }

    #[test]
    fn refuses_deep_arrays_with_position() {
        let src = format!("var x =\n  {}1{};", "[".repeat(20), "]".repeat(20));
        assert_eq!(
            check_nesting(&src, 10),
            Err(TooDeep {
                line: 2,
                column: 13
            })
        );
    }

    #[test]
    fn ignores_brackets_in_strings_and_comments() {
        let src = "var s = '[[[[[['; // ((((((\n /* {{{{{{ */ var t = `[[[[\n[[[`;";
        assert!(check_nesting(src, 1).is_ok());
    }
}
