//! A recording upstream that answers some paths with fixed bodies (listings, metadata) and
//! every other request like [`super::Upstream`] (`hello <path>`, uploads answered with their
//! length and hash).

use super::*;

/// A fixed answer: status, headers and body.
#[derive(Clone, Debug)]
pub struct Fixed {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Sent chunked, in pieces of 16 KiB, without a `Content-Length`.
    pub chunked: bool,
}

impl Fixed {
    /// A `200` with this `Content-Type` and body, with its `Content-Length` and an `ETag`.
    pub fn ok(content_type: &str, body: impl Into<Bytes>) -> Self {
        Fixed {
            status: 200,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("etag".into(), "\"upstream-etag\"".into()),
            ],
            body: body.into(),
            chunked: false,
        }
    }

    /// Sends the body chunked, without a `Content-Length`.
    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The upstream of [`FixedUpstream::start`].
pub struct FixedUpstream {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    _server: Background,
}

impl FixedUpstream {
    /// Answers `GET`/`HEAD` of each path (without query) in `routes` with its fixed answer.
    pub fn start(routes: Vec<(&str, Fixed)>) -> Self {
        let routes: Arc<BTreeMap<String, Fixed>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, f)| (p.to_string(), f))
                .collect(),
        );
        let (listener, addr) = bind_std_on(SocketAddr::from(([127, 0, 0, 1], 0)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let server = Background::spawn(move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let app = Router::new().fallback(move |req: Request| {
                let log = log.clone();
                let routes = routes.clone();
                async move {
                    let fixed = (req.method() == Method::GET || req.method() == Method::HEAD)
                        .then(|| routes.get(req.uri().path()).cloned())
                        .flatten();
                    let resp = upstream_handler(log, req).await;
                    match fixed {
                        Some(f) => {
                            let mut b = Response::builder().status(f.status);
                            for (k, v) in &f.headers {
                                b = b.header(k.as_str(), v.as_str());
                            }
                            let body = if f.chunked {
                                let pieces: Vec<Result<Bytes, Infallible>> = f
                                    .body
                                    .chunks(16 * 1024)
                                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                                    .collect();
                                Body::from_stream(futures_util::stream::iter(pieces))
                            } else {
                                Body::from(f.body)
                            };
                            b.body(body).expect("fixed response")
                        }
                        None => resp,
                    }
                }
            });
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            requests,
            _server: server,
        }
    }

    /// `http://<address>:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far (recorded once its body is read or failed).
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("upstream log").clone()
    }

    /// The requests whose path (without query) is `path`.
    pub fn to_path(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.uri.split('?').next() == Some(path))
            .collect()
    }
}
