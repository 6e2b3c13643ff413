//! The values an embedder exchanges with a running filter: http calls it dispatched and their
//! scripted answers, requests sent through it, upstream responses, and what became of each.
//!
//! Plain data, no wasmtime: tests build and compare them freely.

use crate::abi::Action;

/// An http call the guest dispatched, waiting for [`Vm::respond_http_call`] or
/// [`Vm::fail_http_call`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// The token `proxy_http_call` returned.
    pub token: u32,
    /// The cluster name.
    pub upstream: String,
    /// Request headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Vec<(String, String)>,
    /// The timeout the guest asked for; 0 means none (Envoy then waits forever).
    pub timeout_ms: u32,
}

impl HttpCall {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// A scripted answer to an http call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    /// Becomes the `:status` header.
    pub status: u16,
    /// Further headers.
    pub headers: Vec<(String, String)>,
    /// The body, readable only during `proxy_on_http_call_response`.
    pub body: Vec<u8>,
}

impl HttpCallResponse {
    /// A response with a status and a body.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        HttpCallResponse { status, headers: Vec::new(), body: body.into() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What the guest answered with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u32,
    /// The headers the guest added, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
    /// Envoy's response code details.
    pub details: String,
    /// The gRPC status, when the guest gave one (>= 0).
    pub grpc_status: Option<i32>,
}

impl LocalResponse {
    /// The first value of a header, as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_slice())
    }

    /// The first value of a header, if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A downstream request to send through the filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Headers, pseudo-headers included (`:method`, `:path`, `:authority`, `:scheme`).
    pub headers: Vec<(String, Vec<u8>)>,
    /// A body; `None` ends the stream with the headers.
    pub body: Option<Vec<u8>>,
    /// Trailers.
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl Request {
    /// A body-less request with these headers.
    pub fn new(headers: &[(&str, &str)]) -> Self {
        Request {
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            ..Request::default()
        }
    }
}

/// The upstream's answer to a request the filter let through, fed to the response callbacks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamResponse {
    /// Becomes the `:status` header.
    pub status: u16,
    /// Further headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// A body; `None` ends the stream with the headers.
    pub body: Option<Vec<u8>>,
    /// Trailers.
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl UpstreamResponse {
    /// A response with a status and no body.
    pub fn new(status: u16) -> Self {
        UpstreamResponse { status, ..UpstreamResponse::default() }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Adds a trailer.
    pub fn with_trailer(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.trailers.push((name.into(), value.into()));
        self
    }
}

/// What became of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOutcome {
    /// The stream's context id.
    pub context_id: u32,
    /// What the last stream callback answered.
    pub action: Action,
    /// The guest's local response, if it sent one.
    pub local_response: Option<LocalResponse>,
    /// True when the guest paused without answering: the request stays open until
    /// [`Vm::finish_request`].
    pub open: bool,
    /// True when the guest called `proxy_continue_stream` for it.
    pub continued: bool,
    /// The request headers as the guest left them.
    pub request_headers: Vec<(String, Vec<u8>)>,
    /// The upstream response's headers as the guest left them (`:status` included); empty
    /// unless the request was sent with [`Vm::send_with_response`] and went upstream.
    pub response_headers: Vec<(String, Vec<u8>)>,
    /// The upstream response's body as the guest left it.
    pub response_body: Vec<u8>,
    /// Fuel the guest burned on this request, context creation to deletion.
    pub fuel: u64,
    /// Host calls the guest made during the request.
    pub hostcalls: u64,
}
