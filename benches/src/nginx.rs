//! nginx as a gRPC sidecar for variant `c`: one instance per hop, each started with its own
//! generated configuration on loopback ports and stopped (gracefully, with its workers) when
//! dropped. Install it with `benches/install-proxy` (Debian's `nginx-light`).
//!
//! Each instance runs one worker (the machine is small; a sidecar usually gets a fraction of a
//! core) and keeps its upstream HTTP/2 connections alive, with the per-connection request
//! limits raised so neither side reconnects during a run — a fair, well-configured proxy.

use std::{
    fs, io,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::process;

/// A running nginx instance.
#[derive(Debug)]
pub struct Nginx {
    name: String,
    child: Child,
    /// The loopback port it listens on (plaintext HTTP/2).
    pub port: u16,
}

/// An error starting nginx.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    /// No nginx binary.
    #[error("nginx is not installed: run benches/install-proxy (apt-get install -y nginx-light)")]
    NotInstalled,
    /// Writing the configuration or spawning failed.
    #[error("nginx {name}: {source}")]
    Io {
        /// The instance.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// nginx did not start listening.
    #[error("nginx {name} did not listen on 127.0.0.1:{port} within 10 s; see {log}")]
    NotListening {
        /// The instance.
        name: String,
        /// Its port.
        port: u16,
        /// Its error log.
        log: String,
    },
}

/// The nginx binary, if installed.
pub fn binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The configuration of one hop: HTTP/2 cleartext on `port`, `grpc_pass` to `upstream_port`.
pub fn config(dir: &Path, port: u16, upstream_port: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    http2_max_concurrent_streams 1024;
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://backend;
        }}
    }}
}}
"
    )
}

// === impl Nginx ===

impl Nginx {
    /// Starts an instance named `name` (its files under `work_dir/name`) that listens on a free
    /// loopback port and forwards to `upstream_port`; returns once it accepts connections.
    pub fn start(name: &str, work_dir: &Path, upstream_port: u16) -> Result<Self, NginxError> {
        let bin = binary().ok_or(NginxError::NotInstalled)?;
        let io = |source| NginxError::Io {
            name: name.to_owned(),
            source,
        };
        let dir = work_dir.join(name);
        fs::create_dir_all(&dir).map_err(io)?;
        let dir = dir.canonicalize().map_err(io)?;
        let port = free_port().map_err(io)?;
        let conf = dir.join("nginx.conf");
        fs::write(&conf, config(&dir, port, upstream_port)).map_err(io)?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(io)?;
        let nginx = Nginx {
            name: name.to_owned(),
            child,
            port,
        };
        if !wait_listening(port, Duration::from_secs(10)) {
            return Err(NginxError::NotListening {
                name: name.to_owned(),
                port,
                log: dir.join("error.log").display().to_string(),
            });
        }
        Ok(nginx)
    }

    /// The master and its workers.
    pub fn pids(&self) -> Vec<u32> {
        let master = self.child.id();
        std::iter::once(master)
            .chain(process::children(master))
            .collect()
    }

    /// The instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful shutdown, the master stops its workers. A SIGKILL would orphan them.
        let master = self.child.id().to_string();
        let _ = Command::new("kill").args(["-QUIT", &master]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-TERM", &master]).status();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on now (a listener is bound to port 0 and closed).
pub fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Whether something accepts TCP connections on loopback `port` within `limit`.
pub fn wait_listening(port: u16, limit: Duration) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_listens_on_h2c_and_passes_grpc_with_upstream_keepalive() {
        let c = config(Path::new("/tmp/x"), 4001, 5001);
        assert!(c.contains("listen 127.0.0.1:4001 http2;"), "{c}");
        assert!(c.contains("server 127.0.0.1:5001;"), "{c}");
        assert!(c.contains("grpc_pass grpc://backend;"), "{c}");
        assert!(c.contains("keepalive 256;"), "{c}");
        assert!(c.contains("pid /tmp/x/nginx.pid;"), "{c}");
    }
}
