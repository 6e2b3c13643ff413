//! How the Kubernetes source reaches the API server: in a pod, the service account (the API at
//! `KUBERNETES_SERVICE_HOST`:`KUBERNETES_SERVICE_PORT`, its CA, its namespace, and its token,
//! re-read whenever the file changes: the kubelet rotates projected tokens); elsewhere, the
//! kubeconfig of `KUBECONFIG` (or `~/.kube/config`).
//!
//! It owns building the kube-rs client and the bearer-token layer. It never logs a token and
//! never holds one in an error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::HeaderValue;

use crate::kubernetes_flags::InClusterArgs;

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A service-account file could not be read.
    #[error("cannot read the service account's {what} {path:?}: {source}")]
    File {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The API address from the environment is not a URL.
    #[error("invalid API server address {0:?} (KUBERNETES_SERVICE_HOST/_PORT)")]
    ApiAddress(String),
    /// The kubeconfig could not be used.
    #[error("cannot use the kubeconfig {path}: {why}")]
    Kubeconfig {
        /// The file, or "the default kubeconfig".
        path: String,
        /// kube-rs's complaint.
        why: String,
    },
    /// kube-rs refused the configuration (TLS setup).
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
}

/// A bearer token read from a file, read again when the file changes (its modification time,
/// size or inode) or after the API server refused it.
pub struct TokenFile {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, HeaderValue)>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Stamp { modified: meta.modified().ok(), len: meta.len(), inode })
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("TokenFile").field("path", &self.path).finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads `path` once now, so a missing token fails at start, naming the file.
    pub fn open(path: &Path) -> Result<Arc<TokenFile>, ClusterError> {
        let file = TokenFile { path: path.to_path_buf(), cached: Mutex::new(None) };
        file.read().map_err(|source| ClusterError::File {
            what: "token",
            path: path.into(),
            source,
        })?;
        Ok(Arc::new(file))
    }

    fn read(&self) -> std::io::Result<HeaderValue> {
        let before = stamp(&self.path);
        let text = std::fs::read_to_string(&self.path)?;
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", text.trim())).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the token is not a header value",
                )
            })?;
        value.set_sensitive(true);
        if let Some(stamp) = before {
            *self.lock() = Some((stamp, value.clone()));
        }
        Ok(value)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Stamp, HeaderValue)>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Authorization` value: the cached one while the file is unchanged, else read
    /// again; if reading fails, the last one read (the kubelet swaps the file atomically, so
    /// a failure is a passing race).
    pub fn header(&self) -> Option<HeaderValue> {
        let now = stamp(&self.path);
        if let Some((seen, value)) = self.lock().as_ref() {
            if Some(*seen) == now {
                return Some(value.clone());
            }
        }
        match self.read() {
            Ok(value) => Some(value),
            Err(e) => {
                log::warn!("cannot read the Kubernetes token {:?} again: {e}", self.path);
                self.lock().as_ref().map(|(_, v)| v.clone())
            }
        }
    }

    /// Forgets the cached token (the API server answered 401), so the next request reads
    /// the file again even if it looks unchanged.
    pub fn forget(&self) {
        *self.lock() = None;
    }
}

/// A tower layer that puts the token file's current token on every request.
#[derive(Clone)]
pub struct BearerLayer(pub Arc<TokenFile>);

impl<S> tower::Layer<S> for BearerLayer {
    type Service = Bearer<S>;
    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer { inner, token: self.0.clone() }
    }
}

/// The service of [`BearerLayer`].
#[derive(Clone)]
pub struct Bearer<S> {
    inner: S,
    token: Arc<TokenFile>,
}

impl<S, B> tower::Service<http::Request<B>> for Bearer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(value) = self.token.header() {
            request.headers_mut().insert(http::header::AUTHORIZATION, value);
        }
        self.inner.call(request)
    }
}

/// A client and what it needs around it.
pub struct Connection {
    /// The kube-rs client.
    pub client: kube::Client,
    /// The namespace of the service account or the kubeconfig's context.
    pub default_namespace: String,
    /// The token file the client reads, when it uses one (to forget it after a 401).
    pub token: Option<Arc<TokenFile>>,
    /// Where the configuration came from, for the log.
    pub origin: String,
}

fn read_file(dir: &Path, name: &str, what: &'static str) -> Result<String, ClusterError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| ClusterError::File { what, path, source })
}

/// The in-cluster configuration from `args`, when `KUBERNETES_SERVICE_HOST` is set.
fn in_cluster(
    args: &InClusterArgs,
    host: &str,
) -> Result<(kube::Config, Arc<TokenFile>), ClusterError> {
    let dir = &args.service_account_dir;
    // An IPv6 service host needs brackets in a URL.
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!("https://{host}:{}", args.api_port);
    let uri: http::Uri = url.parse().map_err(|_| ClusterError::ApiAddress(url.clone()))?;
    let mut config = kube::Config::new(uri);
    // Read now so a missing CA fails at start; kube-rs reads the file again to follow a CA
    // rotation.
    read_file(dir, "ca.crt", "CA certificate")?;
    config.root_cert_file = Some(dir.join("ca.crt"));
    config.default_namespace = read_file(dir, "namespace", "namespace")?.trim().to_string();
    let token = TokenFile::open(&dir.join("token"))?;
    Ok((config, token))
}

/// The configuration of a kubeconfig file (`path`, else kube-rs's default: `KUBECONFIG`, then
/// `~/.kube/config`). A `tokenFile` user is served by [`TokenFile`] too.
async fn from_kubeconfig(
    path: Option<&Path>,
) -> Result<(kube::Config, Option<Arc<TokenFile>>), ClusterError> {
    let name =
        path.map(|p| p.display().to_string()).unwrap_or_else(|| "the default kubeconfig".into());
    let bad = |why: String| ClusterError::Kubeconfig { path: name.clone(), why };
    let options = kube::config::KubeConfigOptions::default();
    let mut config = match path {
        Some(p) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(p).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => kube::Config::from_kubeconfig(&options).await.map_err(|e| bad(e.to_string()))?,
    };
    let token = match config.auth_info.token_file.take() {
        Some(file) => Some(TokenFile::open(Path::new(&file))?),
        None => None,
    };
    Ok((config, token))
}

/// Builds the client: in-cluster when `KUBERNETES_SERVICE_HOST` is set, else the kubeconfig.
/// `connect_timeout` bounds connecting, `read_timeout` every read (a watch or list silent that
/// long fails), counted from the request's last write.
pub async fn connect(
    in_cluster_args: &InClusterArgs,
    kubeconfig: Option<&Path>,
    connect_timeout: std::time::Duration,
    read_timeout: std::time::Duration,
) -> Result<Connection, ClusterError> {
    let (mut config, token, origin) =
        match in_cluster_args.api_host.as_deref().filter(|h| !h.is_empty()) {
            Some(host) => {
                let (config, token) = in_cluster(in_cluster_args, host)?;
                let origin = format!("in-cluster service account ({})", config.cluster_url);
                (config, Some(token), origin)
            }
            None => {
                let (config, token) = from_kubeconfig(kubeconfig).await?;
                let origin = format!("kubeconfig ({})", config.cluster_url);
                (config, token, origin)
            }
        };
    config.connect_timeout = Some(connect_timeout);
    config.read_timeout = Some(read_timeout);
    config.write_timeout = Some(connect_timeout);
    config.reset_reader_on_write = true;
    let default_namespace = config.default_namespace.clone();
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| ClusterError::Client(e.to_string()))?;
    let client = match &token {
        Some(t) => builder.with_layer(&BearerLayer(t.clone())).build(),
        None => builder.build(),
    };
    Ok(Connection { client, default_namespace, token, origin })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_token_file_is_read_again_and_a_vanished_one_keeps_the_last_token() {
        let dir = std::env::temp_dir().join(format!("vrp-k8s-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = TokenFile::open(&path).unwrap();
        assert_eq!(file.header().unwrap(), "Bearer first");
        assert!(file.header().unwrap().is_sensitive());
        // The kubelet writes a new file and swaps it in.
        let next = dir.join("token.new");
        std::fs::write(&next, "second-token\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(file.header().unwrap(), "Bearer second-token");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.header().unwrap(), "Bearer second-token");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(TokenFile::open(&path).unwrap_err().to_string().contains("token"));
    }
}
