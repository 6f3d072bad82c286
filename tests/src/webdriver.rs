//! A minimal W3C WebDriver client for Debian's `chromium` + `chromium-driver`, spoken as plain
//! JSON over HTTP with the tests' own client: start chromedriver, open one headless session,
//! navigate, find, click, type, run a script, take a screenshot. Nothing is downloaded.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A status and a JSON body.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request to chromedriver. It answers `Connection: close` but may keep the socket open,
/// so the body is read up to its `Content-Length`.
async fn request(addr: SocketAddr, method: &str, path: &str, _h: &[(&str, &str)], body: Option<&str>) -> Reply {
    let fut = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to chromedriver");
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok());
                if len.is_some_and(|len| rest.len() >= len) {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        Reply {
            status,
            body: rest.to_string(),
        }
    };
    tokio::time::timeout(Duration::from_secs(120), fut)
        .await
        .unwrap_or_else(|_| panic!("chromedriver did not answer {method} {path}"))
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The first of `names` found on PATH (or at an absolute path).
pub fn which(names: &[&str]) -> Option<PathBuf> {
    for n in names {
        let p = PathBuf::from(n);
        if p.is_absolute() && p.is_file() {
            return Some(p);
        }
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let c = dir.join(n);
            if c.is_file() {
                return Some(c);
            }
        }
    }
    None
}

/// Where the browser and its driver are, or None (with the reason) when they are missing.
pub fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = which(&["chromium", "chromium-browser", "/usr/lib/chromium/chromium"]);
    let driver = which(&["chromedriver", "/usr/lib/chromium/chromedriver"]);
    match (chromium, driver) {
        (Some(c), Some(d)) => Ok((c, d)),
        (c, d) => Err(format!(
            "chromium {} and chromedriver {}: install Debian's `chromium` and `chromium-driver` (scripts/setup does)",
            if c.is_some() { "found" } else { "MISSING" },
            if d.is_some() { "found" } else { "MISSING" }
        )),
    }
}

pub struct Browser {
    driver: tokio::process::Child,
    addr: SocketAddr,
    session: String,
    /// Chromium's own process: chromedriver does not end it when the driver is killed.
    browser_pid: Option<u32>,
    _profile: tempfile::TempDir,
}

pub struct Element(pub String);

impl Browser {
    /// Starts chromedriver on a free port and one headless Chromium session with a fresh profile.
    pub async fn start(chromium: &std::path::Path, driver: &std::path::Path) -> Browser {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let r = request(addr, "GET", "/status", &[], None).await;
                if r.status == 200 && r.json()["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,800",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let r = request(addr, "POST", "/session", &[], Some(&caps.to_string())).await;
        assert_eq!(r.status, 200, "new session: {}", r.body);
        let v = r.json();
        let session = v["value"]["sessionId"].as_str().expect("session id").to_string();
        let browser_pid = v["value"]["capabilities"]["goog:processID"].as_u64().map(|p| p as u32);
        Browser {
            driver: child,
            addr,
            session,
            browser_pid,
            _profile: profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("/session/{}{path}", self.session);
        let body = body.map(|b| b.to_string());
        let r = request(self.addr, method, &url, &[], body.as_deref()).await;
        let v = r.json();
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn find(&self, css: &str) -> Option<Element> {
        let url = format!("/session/{}/element", self.session);
        let body = json!({"using": "css selector", "value": css}).to_string();
        let r = request(self.addr, "POST", &url, &[], Some(&body)).await;
        (r.status == 200).then(|| Element(r.json()["value"][ELEMENT].as_str().unwrap().to_string()))
    }

    /// Waits up to `secs` for an element.
    pub async fn wait_for(&self, css: &str, secs: u64) -> Element {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(Instant::now() < deadline, "no element {css} after {secs} s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("/session/{}{path}", self.session);
        let body = body.map(|b| b.to_string());
        let r = request(self.addr, method, &url, &[], body.as_deref()).await;
        if r.status == 200 {
            Ok(r.json()["value"].clone())
        } else {
            Err(r.body)
        }
    }

    /// Clicks the element `css` selects, waiting for it and trying again when the page
    /// replaced it meanwhile (the grid and the panel refresh themselves).
    pub async fn click_on(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let e = self.wait_for(css, 15).await;
            match self
                .try_call("POST", &format!("/element/{}/click", e.0), Some(json!({})))
                .await
            {
                Ok(_) => return,
                Err(why) if why.contains("stale element") && Instant::now() < deadline => {}
                Err(why) => panic!("click {css}: {why}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of the element `css` selects (waiting for it, again when it was replaced).
    pub async fn text_of(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let e = self.wait_for(css, 15).await;
            match self.try_call("GET", &format!("/element/{}/text", e.0), None).await {
                Ok(v) => return v.as_str().unwrap_or_default().to_string(),
                Err(why) if why.contains("stale element") && Instant::now() < deadline => {}
                Err(why) => panic!("text of {css}: {why}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, e: &Element) {
        self.call("POST", &format!("/element/{}/click", e.0), Some(json!({})))
            .await;
    }

    pub async fn type_text(&self, e: &Element, text: &str) {
        self.call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn text(&self, e: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", e.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub async fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": js, "args": [] })))
            .await
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.call("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }

    pub async fn quit(mut self) {
        let url = format!("/session/{}", self.session);
        let _ = request(self.addr, "DELETE", &url, &[], None).await;
        self.browser_pid = None;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    /// A test that panics never reaches `quit`: end the browser it started, by its process id.
    fn drop(&mut self) {
        if let Some(pid) = self.browser_pid.take() {
            let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
        }
    }
}
