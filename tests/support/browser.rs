//! A real headless browser for the self-service pages: Debian's Chromium
//! driven through ChromeDriver's W3C WebDriver protocol (JSON over HTTP, so
//! a blocking HTTP/1.1 client of a few lines is all it takes). The browser
//! follows redirects, keeps the pages' Secure cookies on localhost, applies
//! their Content-Security-Policy and submits their forms as a person would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One ChromeDriver with one browser session; both end on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium (`chromium` and
    /// `chromium-driver` from Debian; scripts/install-test-tools installs
    /// them).
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt install chromium chromium-driver)");
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.call("GET", "/status", None).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let created = browser
            .call(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                 "--hide-scrollbars", "--window-size=640,820"]
                    }
                }}})),
            )
            .expect("a browser session");
        browser.session = created["sessionId"].as_str().expect("session id").to_owned();
        browser
    }

    /// One WebDriver command; its `value`, or the WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        // Blocking I/O: let the test's runtime move its other tasks (the
        // server under test) off this thread meanwhile.
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.call_blocking(method, path, body)),
            Err(_) => self.call_blocking(method, path, body),
        }
    }

    fn call_blocking(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .map_err(|e| e.to_string())?;
        // ChromeDriver keeps the connection open: read the head, then as
        // many bytes as it announces.
        let mut response = Vec::new();
        let mut buffer = [0u8; 8192];
        let split = loop {
            if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let read = stream.read(&mut buffer).map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("the connection closed before the head ended".into());
            }
            response.extend_from_slice(&buffer[..read]);
        };
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .ok_or("no Content-Length")?;
        let mut payload = response[split + 4..].to_vec();
        while payload.len() < length {
            let read = stream.read(&mut buffer).map_err(|e| e.to_string())?;
            if read == 0 {
                break;
            }
            payload.extend_from_slice(&buffer[..read]);
        }
        let value: Value = serde_json::from_slice(&payload).map_err(|e| format!("{e}: {head}"))?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("{method} {path}: {}", value["value"]));
        }
        Ok(value["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body)
            .unwrap_or_else(|e| panic!("webdriver: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({ "url": url })));
    }

    /// The address the browser shows now (after redirects).
    pub fn url(&self) -> String {
        self.session_call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser holds it.
    pub fn source(&self) -> String {
        self.session_call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The visible text of the first element `css` matches.
    pub fn text(&self, css: &str) -> String {
        let element = self.element(css);
        self.session_call("GET", &format!("/element/{element}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn element(&self, css: &str) -> String {
        let found = self.session_call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css}: {found}"))
            .to_owned()
    }

    /// Types `text` into the field `css` matches (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.element(css);
        self.session_call("POST", &format!("/element/{element}/clear"), Some(json!({})));
        self.session_call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Clicks what `css` matches (a form's button: the browser posts it and
    /// follows the answer) and waits until the next page is there: a click
    /// may return before the navigation it starts has landed.
    pub fn click(&self, css: &str) {
        let before = self.source();
        let element = self.element(css);
        self.session_call("POST", &format!("/element/{element}/click"), Some(json!({})));
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.source() == before {
            assert!(Instant::now() < deadline, "the click on {css} led nowhere");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the window.
    pub fn screenshot(&self) -> Vec<u8> {
        let encoded = self.session_call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 screenshot"))
            .expect("screenshot decodes")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
