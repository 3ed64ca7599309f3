//! The package an upload names in its body: `twine upload` (a multipart form) and
//! `cargo publish` (a length-prefixed JSON document, then the crate).
//!
//! The proxy holds such a body back (bounded) until it is whole, reads it here, and forwards it
//! only when every package it names is allowed.

use memchr::memmem;

use super::map::{pypi_file, Target, Upload};
use super::name::{normalize, Ecosystem};

/// Most parts a twine form may have (it sends about twenty).
const MAX_PARTS: usize = 256;

/// Every package an upload body names, in normal form: for twine the `name` field and the
/// project of every file part's file name; for cargo the document's `name`. `None` when the
/// body cannot be read or names none (refused for scoped tokens).
pub fn names(
    kind: Upload,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<(Ecosystem, Vec<String>)> {
    match kind {
        Upload::Twine => twine(content_type?, body).map(|n| (Ecosystem::Pypi, n)),
        Upload::CargoPublish => cargo(body).map(|n| (Ecosystem::Cargo, vec![n])),
    }
}

/// The `boundary` parameter of a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Option<&str> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    // A second `boundary` could be the one another parser takes: none then.
    let mut found = params.split(';').filter_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"'))
    });
    let b = found.next()?;
    (found.next().is_none() && !b.is_empty() && b.len() <= 200).then_some(b)
}

/// A `Content-Disposition` parameter (`name="…"`, `filename="…"`).
fn disposition_param<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"'))
    })
}

fn twine(content_type: &str, body: &[u8]) -> Option<Vec<String>> {
    let delim = format!("--{}", boundary(content_type)?);
    let finder = memmem::Finder::new(delim.as_bytes());
    let starts: Vec<usize> = finder.find_iter(body).take(MAX_PARTS + 1).collect();
    if starts.len() < 2 || starts.len() > MAX_PARTS {
        return None;
    }
    let mut names: Vec<String> = Vec::new();
    let add = |target: Target, names: &mut Vec<String>| -> Option<()> {
        match target {
            Target::Package(Ecosystem::Pypi, ns) => {
                for n in ns {
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
                Some(())
            }
            _ => None,
        }
    };
    for w in starts.windows(2) {
        // A part: delimiter, CRLF, headers, CRLF CRLF, content, CRLF (before the next one).
        let part = &body[w[0] + delim.len()..w[1]];
        let part = part.strip_prefix(b"\r\n")?;
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let (head_len, headers) = match httparse::parse_headers(part, &mut headers).ok()? {
            httparse::Status::Complete((n, h)) => (n, h),
            httparse::Status::Partial => return None,
        };
        let content = part[head_len..].strip_suffix(b"\r\n")?;
        let mut disps = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-disposition"));
        let Some(disp) = disps.next() else {
            continue;
        };
        // Two of them, or an RFC 5987 `filename*` (which some parsers prefer to `filename`):
        // the part could name another file to the store than to Tollgate.
        if disps.next().is_some() {
            return None;
        }
        let disp = std::str::from_utf8(disp.value).ok()?;
        if disposition_param(disp, "filename*").is_some() {
            return None;
        }
        if let Some(file) = disposition_param(disp, "filename") {
            let file = file.rsplit(['/', '\\']).next().unwrap_or(file);
            add(pypi_file(file), &mut names)?;
        } else if disposition_param(disp, "name") == Some("name") {
            let value = std::str::from_utf8(content).ok()?.trim();
            add(
                Target::Package(Ecosystem::Pypi, vec![normalize(Ecosystem::Pypi, value)?]),
                &mut names,
            )?;
        }
    }
    // The body must end with the closing delimiter.
    let last = starts[starts.len() - 1];
    if !body[last + delim.len()..].starts_with(b"--") {
        return None;
    }
    (!names.is_empty()).then_some(names)
}

fn cargo(body: &[u8]) -> Option<String> {
    let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let json = body.get(4..4usize.checked_add(len)?)?;
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    normalize(Ecosystem::Cargo, v.get("name")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
        let b = "XyZbOuNdArY";
        let mut body = Vec::new();
        for (name, file, content) in parts {
            body.extend_from_slice(format!("--{b}\r\n").as_bytes());
            match file {
                Some(f) => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
                ),
                None => body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={b}"), body)
    }

    #[test]
    fn twine_names_the_field_and_every_file() {
        let (ct, body) = form(&[
            (":action", None, b"file_upload"),
            ("name", None, b"Acme_Widget"),
            ("version", None, b"1.0"),
            (
                "content",
                Some("acme_widget-1.0-py3-none-any.whl"),
                b"PK\x03\x04--XyZ",
            ),
        ]);
        assert_eq!(
            names(Upload::Twine, Some(&ct), &body),
            Some((Ecosystem::Pypi, vec!["acme-widget".to_string()]))
        );
        // A file part for another project is named too, whatever the field says.
        let (ct, body) = form(&[
            ("name", None, b"acme-widget"),
            ("content", Some("acme_widget-1.0.tar.gz"), b"x"),
            ("content", Some("globex_gadget-1.0.tar.gz"), b"y"),
        ]);
        let (_, n) = names(Upload::Twine, Some(&ct), &body).unwrap();
        assert_eq!(n, ["acme-widget", "globex-gadget"]);
        // Not multipart, truncated, no name: nothing to tell.
        assert_eq!(names(Upload::Twine, Some("application/json"), &body), None);
        assert_eq!(
            names(Upload::Twine, Some(&ct), &body[..body.len() - 6]),
            None
        );
        let (ct, body) = form(&[("version", None, b"1.0")]);
        assert_eq!(names(Upload::Twine, Some(&ct), &body), None);
        // A file name no project can be read from.
        let (ct, body) = form(&[("name", None, b"a"), ("content", Some("x.exe"), b"")]);
        assert_eq!(names(Upload::Twine, Some(&ct), &body), None);
        // Ambiguous forms: two boundaries, an RFC 5987 file name, two dispositions.
        let (ct, body) = form(&[("name", None, b"acme-widget")]);
        let two = format!("{ct}; boundary=other");
        assert_eq!(names(Upload::Twine, Some(&two), &body), None);
        let (ct2, with_file) = form(&[
            ("name", None, b"acme-widget"),
            ("content", Some("acme_widget-1.0.tar.gz"), b"x"),
        ]);
        assert!(names(Upload::Twine, Some(&ct2), &with_file).is_some());
        let star = String::from_utf8(with_file).unwrap().replace(
            "filename=\"acme_widget-1.0.tar.gz\"",
            "filename=\"acme_widget-1.0.tar.gz\"; filename*=UTF-8''globex_gadget-1.0.tar.gz",
        );
        assert_eq!(names(Upload::Twine, Some(&ct2), star.as_bytes()), None);
        let double = String::from_utf8(body).unwrap().replace(
            "\r\n\r\nacme",
            "\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\nacme",
        );
        assert_eq!(names(Upload::Twine, Some(&ct), double.as_bytes()), None);
    }

    #[test]
    fn cargo_publish_names_its_crate() {
        let json = br#"{"name":"Acme_Widget","vers":"0.1.0"}"#;
        let mut body = (json.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(json);
        body.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            names(Upload::CargoPublish, None, &body),
            Some((Ecosystem::Cargo, vec!["acme-widget".to_string()]))
        );
        assert_eq!(names(Upload::CargoPublish, None, &body[..10]), None);
        assert_eq!(
            names(Upload::CargoPublish, None, &[255, 255, 255, 255]),
            None
        );
    }
}
