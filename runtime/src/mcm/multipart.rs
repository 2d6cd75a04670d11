//! A small `multipart/form-data` parser over a body already in memory.

use bytes::Bytes;

/// One part of a multipart body.
#[derive(Debug, Clone)]
pub struct Part {
    /// The form field name.
    pub name: String,
    /// The file name, for file fields.
    pub filename: Option<String>,
    /// The content (a slice of the body, not a copy).
    pub data: Bytes,
}

/// The boundary of a `multipart/form-data` content type, if it is one.
pub fn boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params_of(params)
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v)
        .filter(|b| !b.is_empty() && b.len() <= 200)
}

/// Splits `body` into its parts.
pub fn parse(body: &Bytes, boundary: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}").into_bytes();
    let mut at = find(body, &delim, 0).ok_or("the multipart body has no boundary line")?;
    let mut parts = Vec::new();
    loop {
        let mut pos = at + delim.len();
        if body.get(pos..pos + 2) == Some(b"--") {
            return Ok(parts);
        }
        pos = skip_newline(body, pos)
            .ok_or("a multipart boundary line is not followed by a newline")?;
        let head_end =
            find(body, b"\r\n\r\n", pos).ok_or("a multipart part has no end of headers")?;
        let head = String::from_utf8_lossy(&body[pos..head_end]);
        let content_start = head_end + 4;
        let mut next_delim = Vec::with_capacity(delim.len() + 2);
        next_delim.extend_from_slice(b"\r\n");
        next_delim.extend_from_slice(&delim);
        let end = find(body, &next_delim, content_start)
            .ok_or("the multipart body is truncated (no closing boundary)")?;
        let (name, filename) =
            disposition(&head).ok_or("a multipart part has no Content-Disposition name")?;
        parts.push(Part {
            name,
            filename,
            data: body.slice(content_start..end),
        });
        at = end + 2;
    }
}

fn skip_newline(body: &[u8], pos: usize) -> Option<usize> {
    match body.get(pos..) {
        Some([b'\r', b'\n', ..]) => Some(pos + 2),
        Some([b'\n', ..]) => Some(pos + 1),
        _ => None,
    }
}

/// The field name and file name of a part's headers.
fn disposition(head: &str) -> Option<(String, Option<String>)> {
    let line = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    })?;
    let (_, params) = line.split_once(';').unwrap_or((line, ""));
    let params = params_of(params);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    Some((get("name")?, get("filename")))
}

/// Parses `a=1; b="x;y"` into pairs, honouring quotes and backslash escapes.
fn params_of(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ';' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
                while chars.peek().is_some_and(|c| *c != ';') {
                    chars.next();
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
}

/// The first index of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let rel = hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)?;
        i += rel;
        if &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_and_files() {
        let ct = "multipart/form-data; boundary=\"XyZ\"";
        let b = boundary(ct).unwrap();
        assert_eq!(b, "XyZ");
        let body = Bytes::from_static(
            b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nmy-mim\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a;b.tar\"\r\nContent-Type: application/x-tar\r\n\r\n\x00\x01\r\n--XyZ--\r\n",
        );
        let parts = parse(&body, &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "name");
        assert_eq!(&parts[0].data[..], b"my-mim");
        assert_eq!(parts[1].filename.as_deref(), Some("a;b.tar"));
        assert_eq!(&parts[1].data[..], b"\x00\x01");
    }

    #[test]
    fn refuses_broken_bodies() {
        assert!(boundary("application/json").is_none());
        assert!(parse(&Bytes::from_static(b"nothing"), "b").is_err());
        assert!(parse(
            &Bytes::from_static(b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nabc"),
            "b"
        )
        .is_err());
    }
}
