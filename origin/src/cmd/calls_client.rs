//! `tern calls --url`: call records from a running origin's API
//! (`GET /v1/calls`) instead of its store. The embedded store's file is
//! locked by the origin using it, so this is how to read records while it
//! runs; it works the same against an origin on Redis.

use std::time::Duration;

use anyhow::Context as _;

use crate::edge::calls::{Page, Query};

/// How long one page may take to arrive.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The API's URL for `q`: `base` (`http://host:port`, possibly with a path
/// prefix behind a proxy) + `/v1/calls` + the query.
fn url_for(base: &str, q: &Query) -> anyhow::Result<reqwest::Url> {
    let mut url =
        reqwest::Url::parse(base).with_context(|| format!("--url {base:?} is not a URL"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--url {base:?} cannot have a path"))?
        .pop_if_empty()
        .extend(["v1", "calls"]);
    {
        let mut pairs = url.query_pairs_mut();
        let text = [
            ("room", &q.room),
            ("identity", &q.identity),
            ("cursor", &q.cursor),
        ];
        for (name, v) in text {
            if let Some(v) = v {
                pairs.append_pair(name, v);
            }
        }
        let numbers = [("since", q.since_ms), ("until", q.until_ms)];
        for (name, v) in numbers {
            if let Some(v) = v {
                pairs.append_pair(name, &v.to_string());
            }
        }
        if let Some(l) = q.limit {
            pairs.append_pair("limit", &l.to_string());
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// One page of `q` from the origin at `base`, authenticated with the API
/// secret.
pub fn fetch_page(base: &str, token: &str, q: &Query) -> anyhow::Result<Page> {
    let url = url_for(base, q)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(url.clone())
            .bearer_auth(token)
            .timeout(TIMEOUT)
            .send()
            .await
            .with_context(|| format!("asking {url}"))?;
        let status = resp.status();
        let body = resp.bytes().await.context("reading the answer")?;
        if !status.is_success() {
            // The API's errors are `{"code", "message"}`: show the sentence.
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{url} answered {status}: {message}");
        }
        serde_json::from_slice(&body).with_context(|| format!("{url} sent no page of calls"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_travels_in_the_url() {
        let q = Query {
            room: Some("team standup/1".into()),
            identity: None,
            since_ms: Some(5),
            until_ms: None,
            limit: Some(10),
            cursor: Some("c-1".into()),
        };
        let u = url_for("http://127.0.0.1:8080", &q).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/v1/calls?room=team+standup%2F1&cursor=c-1&since=5&limit=10"
        );
        let u = url_for("https://ops.example/tern/", &Query::default()).unwrap();
        assert_eq!(u.as_str(), "https://ops.example/tern/v1/calls");
        assert!(url_for("not a url", &q).is_err());
    }
}
