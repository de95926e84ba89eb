//! A small W3C WebDriver client for the browser tests: Debian's `chromedriver` driving
//! its `chromium` headless, spoken to over plain HTTP/1.1 on loopback (std only, no
//! async runtime in the tests). Each [`Browser`] is one WebDriver session with its own
//! profile directory, so two of them are two users with their own cookies.

#![allow(dead_code)]

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs them (`apt-get install chromium chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The key W3C WebDriver names elements with.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser check taking longer than this is a failure (generous: shared CI machines).
pub const BROWSER_WAIT: Duration = Duration::from_secs(60);

/// True when chromium and chromedriver are installed.
pub fn available() -> bool {
    Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists()
}

/// A running chromedriver; stopped (by its PID) when dropped.
pub struct Driver {
    port: u16,
    child: Child,
}

fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open after answering: read by Content-Length.
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err(format!("chromedriver closed the connection: {head}"));
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("no Content-Length from chromedriver: {head}"))?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| e.to_string())?;
    let body = String::from_utf8_lossy(&buf).into_owned();
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if let Some(err) = v["value"]["error"].as_str() {
        return Err(format!(
            "{err}: {}",
            v["value"]["message"].as_str().unwrap_or("")
        ));
    }
    Ok(v["value"].clone())
}

impl Driver {
    pub fn start(log: &Path) -> Driver {
        let port = super::free_port();
        let f = std::fs::File::create(log).expect("chromedriver log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start chromedriver");
        let d = Driver { port, child };
        super::wait_for("chromedriver to be ready", || {
            request(port, "GET", "/status", None)
                .ok()
                .filter(|v| v["ready"] == true)
        });
        d
    }

    /// A new headless browser with its own profile in `profile`.
    pub fn browser(&self, profile: &Path) -> Browser {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let v = request(self.port, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("cannot start chromium through chromedriver: {e}"));
        Browser {
            port: self.port,
            session: v["sessionId"].as_str().expect("a session id").to_string(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// One browser (a WebDriver session).
pub struct Browser {
    port: u16,
    session: String,
}

/// An element of the current page.
#[derive(Clone)]
pub struct Element(String);

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        request(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
    }

    fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, path, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.must("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub fn find(&self, css: &str) -> Option<Element> {
        self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT_KEY].as_str().map(|s| Element(s.to_string())))
    }

    /// Waits until `css` matches an element.
    pub fn wait_find(&self, css: &str) -> Element {
        self.wait_until(&format!("an element matching `{css}`"), || self.find(css))
    }

    pub fn text(&self, e: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", e.0), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The text of the element matching `css` now, if there is one.
    pub fn text_of(&self, css: &str) -> Option<String> {
        self.find(css).map(|e| self.text(&e))
    }

    pub fn click(&self, e: &Element) {
        self.must("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }

    /// Clicks `e` unless the page has moved on meanwhile (the element is gone, or it
    /// belongs to a page that is being replaced); says whether the click happened.
    pub fn try_click(&self, e: &Element) -> bool {
        self.call("POST", &format!("/element/{}/click", e.0), Some(json!({})))
            .is_ok()
    }

    pub fn type_into(&self, e: &Element, text: &str) {
        self.must(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        );
    }

    /// Fills the field matching `css`.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.wait_find(css);
        self.type_into(&e, text);
    }

    /// Clicks the element matching `css`.
    pub fn click_on(&self, css: &str) {
        let e = self.wait_find(css);
        self.click(&e);
    }

    /// Runs `script` in the page (its `return` value comes back).
    pub fn js(&self, script: &str) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Runs `script` in the page; it calls `arguments[0]` with its result.
    pub fn js_async(&self, script: &str) -> Value {
        self.must(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Polls `f` until it returns `Some`, or panics naming `what` (with the page's URL).
    pub fn wait_until<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if start.elapsed() > BROWSER_WAIT {
                let page = self
                    .call("GET", "/source", None)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                panic!(
                    "timed out after {BROWSER_WAIT:?} waiting for {what} on {}; page:\n{page}",
                    self.url()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves the page at 1280 px and at 375 px wide as `<dir>/<name>-1280.png` and
    /// `-375.png`; returns the paths.
    pub fn screenshots(&self, dir: &Path, name: &str) -> Vec<PathBuf> {
        std::fs::create_dir_all(dir).expect("screenshot dir");
        let mut saved = Vec::new();
        for (width, height) in [(1280, 900), (375, 812)] {
            self.must(
                "POST",
                "/window/rect",
                Some(json!({"width": width, "height": height})),
            );
            let png = self.must("GET", "/screenshot", None);
            let bytes = decode_base64(png.as_str().unwrap_or(""));
            let path = dir.join(format!("{name}-{width}.png"));
            std::fs::write(&path, bytes).expect("write screenshot");
            saved.push(path);
        }
        self.must(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": 900})),
        );
        for p in &saved {
            eprintln!("screenshot: {}", p.display());
        }
        saved
    }
}

impl Browser {
    /// Runs axe-core (`axe_js`: the source of `axe.min.js`) on the current page and
    /// returns its serious and critical violations, one line each.
    pub fn axe_violations(&self, axe_js: &str) -> Vec<String> {
        // WebDriver scripts are not subject to the page's Content-Security-Policy.
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({"script": format!("{axe_js}\n;return null;"), "args": []})),
        );
        let found = self.js_async(
            "var done = arguments[0]; \
             axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}}) \
               .then(function (r) { done(r.violations \
                 .filter(function (v) { return v.impact === 'serious' || v.impact === 'critical'; }) \
                 .map(function (v) { return v.id + ': ' + v.help + ' at ' + \
                   v.nodes.map(function (n) { return n.target.join(' '); }).join(', '); })); }) \
               .catch(function (e) { done(['axe failed: ' + e]); });",
        );
        found
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// Standard base64 (screenshots), without a dependency.
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
