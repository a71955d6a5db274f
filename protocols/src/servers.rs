//! Real servers for tests and benchmarks: each started from its
//! distribution binary on a free loopback port, with a throw-away config
//! and data folder, and killed when its [`Server`] guard is dropped (also
//! when a test panics).
//!
//! A missing binary is a skip with a printed reason ([`Server::start`]
//! returns `None`), unless `ANYFRAME_REQUIRE_PEERS=1`, which makes it a
//! panic: set it where the servers are installed and a skip would hide a
//! missing test.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const STARTUP: Duration = Duration::from_secs(10);
/// Ports tried before giving up.
const ATTEMPTS: usize = 3;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `redis-server` (Debian package `redis-server`).
    Redis,
    /// `memcached` (Debian package `memcached`).
    Memcached,
    /// `nginx` (Debian package `nginx-light`).
    Nginx,
}

impl Kind {
    /// The binary's name, looked up in `PATH` and the sbin folders.
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Redis => "redis-server",
            Kind::Memcached => "memcached",
            Kind::Nginx => "nginx",
        }
    }
}

/// A running server; dropping it kills the process and removes its folder.
#[derive(Debug)]
pub struct Server {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    version: String,
}

impl Server {
    /// Starts `kind` on a free loopback port, or returns `None` (after
    /// printing why) when its binary is not installed.
    ///
    /// # Panics
    ///
    /// If the binary is missing and `ANYFRAME_REQUIRE_PEERS=1`, or if the
    /// server does not come up.
    pub fn start(kind: Kind) -> Option<Server> {
        let Some(bin) = find_binary(kind.binary()) else {
            let why = format!(
                "{} not installed (Debian package {})",
                kind.binary(),
                package(kind)
            );
            if require_peers() {
                panic!("ANYFRAME_REQUIRE_PEERS=1 but {why}");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        // The port is free when picked but released for the server to take,
        // so a parallel test may take it first: the server then exits, and
        // a new port is tried.
        let mut failures = String::new();
        for _ in 0..ATTEMPTS {
            match Server::spawn(kind, &bin) {
                Ok(server) => return Some(server),
                Err(why) => failures.push_str(&why),
            }
        }
        panic!("{} did not start: {failures}", kind.binary());
    }

    fn spawn(kind: Kind, bin: &Path) -> Result<Server, String> {
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = match kind {
            Kind::Redis => redis_command(bin, dir.path(), port),
            Kind::Memcached => memcached_command(bin, port),
            Kind::Nginx => nginx_command(bin, dir.path(), port),
        };
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let version = version_of(kind, bin);
        let mut server = Server {
            kind,
            child,
            addr,
            dir,
            version,
        };
        server.wait_until_up()?;
        Ok(server)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Which server this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The server's version line (`redis-server -v`, `memcached -V`,
    /// `nginx -v`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The folder the server serves (nginx) or keeps its data in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// For nginx: the document root, where tests put the files to serve.
    pub fn docroot(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    /// Kills the server now (`SIGKILL`: no goodbye on the wire).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_until_up(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        loop {
            // Exited (the port was taken after all)? Checked before the
            // connect, which could reach whoever took the port.
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "\nexited ({status}) before listening: {}",
                    self.log()
                ));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not listen within {STARTUP:?}: {}",
                    self.kind.binary(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Debian package that installs `kind`.
pub fn package(kind: Kind) -> &'static str {
    match kind {
        Kind::Redis => "redis-server",
        Kind::Memcached => "memcached",
        Kind::Nginx => "nginx-light",
    }
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A port the kernel just handed out on 127.0.0.1 (released again for the
/// server to take).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn redis_command(bin: &Path, dir: &Path, port: u16) -> Command {
    let conf = dir.join("redis.conf");
    write_file(
        &conf,
        &format!(
            "bind 127.0.0.1\nport {port}\ndir {}\nsave \"\"\nappendonly no\n\
             daemonize no\nprotected-mode no\nlogfile \"\"\n",
            dir.display()
        ),
    );
    let mut cmd = Command::new(bin);
    cmd.arg(conf);
    cmd
}

fn memcached_command(bin: &Path, port: u16) -> Command {
    let mut cmd = Command::new(bin);
    // 2 MiB items so a 1 MiB value (plus item overhead) fits; UDP off.
    cmd.args([
        "-l",
        "127.0.0.1",
        "-U",
        "0",
        "-m",
        "512",
        "-I",
        "2m",
        "-t",
        "1",
    ])
    .arg("-p")
    .arg(port.to_string());
    if is_root() {
        // memcached refuses to run as root without naming a user.
        cmd.args(["-u", "root"]);
    }
    cmd
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn nginx_command(bin: &Path, dir: &Path, port: u16) -> Command {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).expect("docroot");
    let d = dir.display();
    let mut conf = String::new();
    let _ = write!(
        conf,
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  default_type application/octet-stream;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n\
             location /gz/ {{ gzip on; gzip_min_length 0; gzip_types *; \
         add_trailer X-Checksum \"done\" always; }}\n\
             location = /early {{ return 204; }}\n  }}\n}}\n",
    );
    let path = dir.join("nginx.conf");
    write_file(&path, &conf);
    let mut cmd = Command::new(bin);
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(path);
    cmd
}

fn version_of(kind: Kind, bin: &Path) -> String {
    let flag = match kind {
        Kind::Redis => "-v",
        Kind::Memcached => "-V",
        Kind::Nginx => "-v",
    };
    match Command::new(bin).arg(flag).output() {
        Ok(o) => {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            text.lines().next().unwrap_or_default().trim().to_owned()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// Whether a server is needed but missing is a failure here.
pub fn require_peers() -> bool {
    std::env::var_os("ANYFRAME_REQUIRE_PEERS").is_some_and(|v| v == "1")
}
