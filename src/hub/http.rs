//! HTTP for the hub client, on `ureq`. Two rules hold for every request:
//!
//! - the token (`Authorization: Bearer …`) goes only to the hub's own origin
//!   (scheme, host and port of the endpoint), never to a storage host a
//!   redirect points to;
//! - redirects are followed here, hop by hop, so that each hop decides again
//!   whether the token goes with it (`ureq` agents are built with
//!   `redirects(0)`).
//!
//! Proxies are taken from [`ProxySettings`] (the CLI reads `HTTPS_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`…), never by `ureq` from the environment, and
//! loopback hosts are always reached directly.

use std::time::Duration;

use url::Url;

use super::error::HubError;

/// How many redirects one request may follow.
const MAX_REDIRECTS: usize = 10;

/// Proxies as the user set them. Only `http://` proxies are supported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// The proxy for `https://` URLs (`HTTPS_PROXY`, else `ALL_PROXY`).
    pub https: Option<String>,
    /// The proxy for `http://` URLs (`HTTP_PROXY`, else `ALL_PROXY`).
    pub http: Option<String>,
    /// Hosts reached directly (`NO_PROXY`): a name also covers its
    /// subdomains, `*` covers every host.
    pub no_proxy: Vec<String>,
}

impl ProxySettings {
    /// The proxy a request to `url` goes through, if any. Loopback hosts
    /// (`localhost`, 127.0.0.0/8, ::1) never go through a proxy: a proxy
    /// cannot reach this machine's own loopback services.
    pub fn proxy_for(&self, url: &Url) -> Option<&str> {
        let host = url.host()?;
        let name = match host {
            url::Host::Domain(d) => {
                let d = d.to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    return None;
                }
                d
            }
            url::Host::Ipv4(ip) if ip.is_loopback() => return None,
            url::Host::Ipv6(ip) if ip.is_loopback() => return None,
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let bypassed = self.no_proxy.iter().any(|entry| {
            let entry = entry
                .trim()
                .trim_start_matches("*.")
                .trim_start_matches('.');
            let entry = entry
                .trim_matches(|c| c == '[' || c == ']')
                .to_ascii_lowercase();
            entry == "*"
                || (!entry.is_empty() && (name == entry || name.ends_with(&format!(".{entry}"))))
        });
        if bypassed {
            return None;
        }
        match url.scheme() {
            "https" => self.https.as_deref(),
            "http" => self.http.as_deref(),
            _ => None,
        }
        .filter(|p| !p.trim().is_empty())
    }
}

/// A failed request: what `ureq` said and for which URL, or a failure of
/// our own (a bad redirect, an unusable proxy).
#[derive(Debug)]
pub(crate) enum HttpError {
    Ureq {
        url: Url,
        error: Box<ureq::Error>,
        proxy: Option<String>,
    },
    Hub(HubError),
}

/// The agents and the token for one hub endpoint.
pub(crate) struct Client {
    hub: url::Origin,
    token: Option<String>,
    proxies: ProxySettings,
    direct: ureq::Agent,
    /// One agent per proxy URL, built on first use: a proxy that is set but
    /// never needed (say, only loopback hosts are reached) cannot fail a run.
    proxied: std::sync::Mutex<Vec<(String, ureq::Agent)>>,
}

fn agent_builder() -> ureq::AgentBuilder {
    ureq::AgentBuilder::new()
        .redirects(0)
        // Only `ProxySettings` decide; `ureq` would ignore NO_PROXY.
        .try_proxy_from_env(false)
        .timeout_connect(Duration::from_secs(20))
        .timeout_read(Duration::from_secs(60))
        .user_agent(concat!("mawqif/", env!("CARGO_PKG_VERSION")))
}

impl Client {
    pub(crate) fn new(endpoint: &Url, token: Option<String>, proxies: ProxySettings) -> Self {
        Self {
            hub: endpoint.origin(),
            token,
            proxies,
            direct: agent_builder().build(),
            proxied: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Is `url` on the hub's own origin, where the token may go?
    pub(crate) fn on_hub(&self, url: &Url) -> bool {
        url.origin() == self.hub
    }

    fn agent_for(&self, url: &Url) -> Result<(ureq::Agent, Option<String>), HttpError> {
        let Some(proxy) = self.proxies.proxy_for(url) else {
            return Ok((self.direct.clone(), None));
        };
        let mut cache = self
            .proxied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, agent)) = cache.iter().find(|(p, _)| p == proxy) {
            return Ok((agent.clone(), Some(proxy.to_string())));
        }
        let parsed = ureq::Proxy::new(proxy).map_err(|e| {
            HttpError::Hub(HubError::BadProxy {
                proxy: proxy.to_string(),
                reason: e.to_string(),
            })
        })?;
        let agent = agent_builder().proxy(parsed).build();
        cache.push((proxy.to_string(), agent.clone()));
        Ok((agent, Some(proxy.to_string())))
    }

    /// One request, no redirect followed. The token is attached only when
    /// `url` is on the hub's origin.
    pub(crate) fn send(
        &self,
        method: &str,
        url: &Url,
        range_from: Option<u64>,
    ) -> Result<ureq::Response, HttpError> {
        let (agent, proxy) = self.agent_for(url)?;
        let mut request = agent
            .request_url(method, url)
            // The size and ranges must be those of the stored bytes.
            .set("Accept-Encoding", "identity");
        if let Some(from) = range_from {
            request = request.set("Range", &format!("bytes={from}-"));
        }
        if let Some(token) = self.token.as_deref().filter(|_| self.on_hub(url)) {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        request.call().map_err(|error| HttpError::Ureq {
            url: url.clone(),
            error: Box::new(error),
            proxy,
        })
    }

    /// `method` on `url`, following redirects only while they stay on the
    /// hub's origin (a renamed repo, say). A redirect elsewhere (the storage
    /// host of a large file) is returned as it is: its headers describe the
    /// file. Returns the last URL asked and its answer.
    pub(crate) fn send_on_hub(
        &self,
        method: &str,
        url: &Url,
    ) -> Result<(Url, ureq::Response), HttpError> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send(method, &url, None)?;
            match redirect_target(&url, &response)? {
                Some(next) if self.on_hub(&next) => url = next,
                _ => return Ok((url, response)),
            }
        }
        Err(too_many_redirects(&url))
    }

    /// GET `url` from byte `range_from`, following every redirect; each hop
    /// carries the token only if it is on the hub's origin.
    pub(crate) fn get_content(
        &self,
        url: &Url,
        range_from: Option<u64>,
    ) -> Result<(Url, ureq::Response), HttpError> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send("GET", &url, range_from)?;
            match redirect_target(&url, &response)? {
                Some(next) => url = next,
                None => return Ok((url, response)),
            }
        }
        Err(too_many_redirects(&url))
    }
}

/// Where a 3xx answer points, resolved against the URL asked.
pub(crate) fn redirect_target(
    asked: &Url,
    response: &ureq::Response,
) -> Result<Option<Url>, HttpError> {
    if !(300..400).contains(&response.status()) {
        return Ok(None);
    }
    let Some(location) = response.header("Location") else {
        return Err(HttpError::Hub(HubError::Protocol {
            what: public_url(asked),
            reason: format!("HTTP {} without a Location header", response.status()),
        }));
    };
    asked.join(location).map(Some).map_err(|e| {
        HttpError::Hub(HubError::Protocol {
            what: public_url(asked),
            reason: format!("redirect to an invalid URL: {e}"),
        })
    })
}

fn too_many_redirects(url: &Url) -> HttpError {
    HttpError::Hub(HubError::Protocol {
        what: public_url(url),
        reason: format!("more than {MAX_REDIRECTS} redirects"),
    })
}

/// A URL fit for messages: no query (signed storage URLs carry their
/// credentials there) and no user info.
pub(crate) fn public_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// Percent-encode one URL path segment (a revision like `refs/pr/1` becomes
/// `refs%2Fpr%2F1`), keeping only the unreserved characters.
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn proxies_follow_scheme_no_proxy_and_never_loopback() {
        let p = ProxySettings {
            https: Some("http://proxy:3128".into()),
            http: Some("http://plain-proxy:3128".into()),
            no_proxy: vec![".internal.example".into(), "10.1.2.3".into()],
        };
        assert_eq!(
            p.proxy_for(&url("https://huggingface.co/x")),
            Some("http://proxy:3128")
        );
        assert_eq!(
            p.proxy_for(&url("http://mirror.example/x")),
            Some("http://plain-proxy:3128")
        );
        for direct in [
            "http://127.0.0.1:8080/x",
            "http://127.3.2.1/x",
            "http://[::1]:9/x",
            "http://localhost:9/x",
            "https://hub.internal.example/x",
            "https://internal.example/x",
            "http://10.1.2.3/x",
        ] {
            assert_eq!(p.proxy_for(&url(direct)), None, "{direct}");
        }
        let all = ProxySettings {
            no_proxy: vec!["*".into()],
            ..p.clone()
        };
        assert_eq!(all.proxy_for(&url("https://huggingface.co/x")), None);
        assert_eq!(
            ProxySettings::default().proxy_for(&url("https://huggingface.co/x")),
            None
        );
    }

    #[test]
    fn the_token_goes_to_the_hub_origin_only() {
        let c = Client::new(
            &url("https://huggingface.co"),
            Some("hf_x".into()),
            ProxySettings::default(),
        );
        assert!(c.on_hub(&url(
            "https://huggingface.co/org/m/resolve/main/config.json"
        )));
        assert!(c.on_hub(&url("https://huggingface.co:443/api/models/org/m")));
        for other in [
            "http://huggingface.co/x",
            "https://huggingface.co:8443/x",
            "https://cdn-lfs.huggingface.co/x",
            "https://huggingface.co.evil.example/x",
        ] {
            assert!(!c.on_hub(&url(other)), "{other}");
        }
    }

    #[test]
    fn segments_and_messages_are_safe() {
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_segment("v1.0_a-b~"), "v1.0_a-b~");
        assert_eq!(
            public_url(&url("https://u:p@cdn.example/blob?X-Amz-Signature=s")),
            "https://cdn.example/blob"
        );
    }
}
