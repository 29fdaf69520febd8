//! Drops hostile keys from list responses before `object_store` parses them.
//!
//! `object_store` turns every listed key into its `Path` type, which rejects empty segments
//! (`a//b`), `.` and `..` segments and control characters, and one such key fails the whole
//! list call. A bucket anyone can write to would then make its directory unreadable. So each
//! cloud client gets this HTTP layer: for list requests (Azure `comp=list`, S3 and GCS
//! `list-type=2`) it reads the XML body, removes every `<Blob>`/`<BlobPrefix>` (Azure) or
//! `<Contents>`/`<CommonPrefixes>` (S3, GCS) entry whose key `object_store` would reject,
//! warns once per key, and hands the rest on. Other requests pass through untouched.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpResponseBody, HttpService,
    ReqwestConnector,
};
use object_store::path::Path as StorePath;

use warpdrive_metrics::BackendMetrics;

use crate::attempts::Attempts;
use crate::keys::WarnOnce;
use crate::retry::RetryState;

/// (entry open tag, entry close tag, element holding its key) for each list dialect.
const ENTRIES: [(&str, &str, &str); 4] = [
    ("<Blob>", "</Blob>", "Name"),
    ("<BlobPrefix>", "</BlobPrefix>", "Name"),
    ("<Contents>", "</Contents>", "Key"),
    ("<CommonPrefixes>", "</CommonPrefixes>", "Prefix"),
];

/// The connector given to every cloud builder.
#[derive(Debug)]
pub(crate) struct FilteringConnector {
    pub backend: String,
    pub warned: Arc<WarnOnce>,
    /// Every HTTP attempt is counted into these (see [`crate::attempts`]).
    pub metrics: BackendMetrics,
    /// The retry policy's state, shared by every client of the backend.
    pub retry: Arc<RetryState>,
    pub seen: Arc<crate::checksum::Seen>,
    pub dialect: crate::checksum::Dialect,
}

impl HttpConnector for FilteringConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let raw = ReqwestConnector::default().connect(options)?;
        let inner = HttpClient::new(Attempts {
            inner: raw,
            metrics: self.metrics.clone(),
            state: self.retry.clone(),
            seen: self.seen.clone(),
            dialect: self.dialect,
        });
        Ok(HttpClient::new(ListFilter {
            inner,
            backend: self.backend.clone(),
            warned: self.warned.clone(),
        }))
    }
}

#[derive(Debug)]
struct ListFilter {
    inner: HttpClient,
    backend: String,
    warned: Arc<WarnOnce>,
}

/// Whether a request lists a prefix (Azure `comp=list`; S3 and GCS `list-type=2`).
pub(crate) fn is_list(req: &HttpRequest) -> bool {
    req.method() == "GET"
        && req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "comp=list" || p == "list-type=2"))
}

#[async_trait]
impl HttpService for ListFilter {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let list = is_list(&req);
        let resp = self.inner.execute(req).await?;
        if !list || !resp.status().is_success() {
            return Ok(resp);
        }
        let (mut parts, body) = resp.into_parts();
        let bytes = body.bytes().await?;
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Ok(HttpResponse::from_parts(
                parts,
                HttpResponseBody::from(bytes),
            ));
        };
        let filtered = filter_list_xml(text, |key| {
            let ok = StorePath::parse(key).is_ok();
            if !ok {
                self.warned.warn(&self.backend, key);
            }
            ok
        });
        match filtered {
            Some(out) => {
                parts.headers.remove("content-length");
                Ok(HttpResponse::from_parts(parts, HttpResponseBody::from(out)))
            }
            None => Ok(HttpResponse::from_parts(
                parts,
                HttpResponseBody::from(bytes),
            )),
        }
    }
}

/// Removes the entries whose key `keep` rejects; `None` if nothing was removed.
///
/// One pass over the body: the next occurrence of each dialect's entry tag is remembered and
/// searched again only once the cursor has moved past it.
pub(crate) fn filter_list_xml(text: &str, mut keep: impl FnMut(&str) -> bool) -> Option<String> {
    let find_from = |from: usize, tag: &str| text[from..].find(tag).map(|i| from + i);
    let mut next: [Option<usize>; ENTRIES.len()] =
        std::array::from_fn(|i| find_from(0, ENTRIES[i].0));
    let mut out = String::with_capacity(text.len());
    let mut removed = false;
    let mut pos = 0;
    while let Some((which, start)) = next
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.map(|p| (i, p)))
        .min_by_key(|(_, p)| *p)
    {
        let (_, close, key_el) = ENTRIES[which];
        let Some(end) = find_from(start, close).map(|e| e + close.len()) else {
            break;
        };
        let block = &text[start..end];
        out.push_str(&text[pos..start]);
        match element_text(block, key_el) {
            Some(raw) if !keep(&unescape(raw)) => removed = true,
            _ => out.push_str(block),
        }
        pos = end;
        for (i, p) in next.iter_mut().enumerate() {
            if p.is_some_and(|p| p < pos) {
                *p = find_from(pos, ENTRIES[i].0);
            }
        }
    }
    out.push_str(&text[pos..]);
    removed.then_some(out)
}

/// The text of the first `<el>` (with or without attributes) inside `block`.
fn element_text<'a>(block: &'a str, el: &str) -> Option<&'a str> {
    let open_plain = format!("<{el}>");
    let open_attr = format!("<{el} ");
    let i = block.find(&open_plain).or_else(|| block.find(&open_attr))?;
    let after = &block[i..];
    let gt = after.find('>')? + 1;
    let close = format!("</{el}>");
    let end = after.find(&close)?;
    after.get(gt..end)
}

/// Decodes XML character references and the five predefined entities.
fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(semi) = tail.find(';') else {
            out.push_str(tail);
            return out;
        };
        let entity = &tail[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&tail[..=semi]),
        }
        rest = &tail[semi + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(k: &str) -> bool {
        StorePath::parse(k).is_ok()
    }

    #[test]
    fn s3_hostile_entries_are_removed() {
        let xml = "<ListBucketResult><Prefix>d/</Prefix>\
            <Contents><Key>d/ok</Key><Size>1</Size></Contents>\
            <Contents><Key>d/..</Key><Size>1</Size></Contents>\
            <CommonPrefixes><Prefix>d/a/</Prefix></CommonPrefixes>\
            <CommonPrefixes><Prefix>d//</Prefix></CommonPrefixes>\
            <CommonPrefixes><Prefix>d/./</Prefix></CommonPrefixes>\
            </ListBucketResult>";
        let out = filter_list_xml(xml, valid).expect("something removed");
        assert!(out.contains("<Key>d/ok</Key>") && out.contains("<Prefix>d/a/</Prefix>"));
        assert!(
            !out.contains("d/..") && !out.contains("d//") && !out.contains("d/./"),
            "{out}"
        );
        assert!(
            out.starts_with("<ListBucketResult><Prefix>d/</Prefix>")
                && out.ends_with("</ListBucketResult>")
        );
    }

    #[test]
    fn azure_entries_and_escapes() {
        let xml = "<Blobs><Blob><Name>a &amp; b</Name></Blob><BlobPrefix><Name>x/../</Name></BlobPrefix>\
            <Blob><Name>bad&#x1;char</Name></Blob></Blobs>";
        let out = filter_list_xml(xml, valid).expect("removed");
        assert_eq!(out, "<Blobs><Blob><Name>a &amp; b</Name></Blob></Blobs>");
    }

    #[test]
    fn clean_listing_is_untouched() {
        let xml = "<Blobs><Blob><Name>fine</Name></Blob></Blobs>";
        assert!(filter_list_xml(xml, valid).is_none());
        assert_eq!(unescape("&lt;&#65;&#x42;&quot;&unknown;"), "<AB\"&unknown;");
    }
}
