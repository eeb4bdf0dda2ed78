//! The job server's status page in a real browser: headless Chromium driven over
//! WebDriver (`chromedriver`, Debian's `chromium-driver`; `testing/tools.sh` installs it). The
//! page asks for the token, lists the running jobs, and its stop button ends a job with
//! a savepoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::server::{Server, job_args};
use support::write_csv_input;

/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one browser session in it.
struct Browser {
    driver: Child,
    base: String,
    session: String,
}

impl Browser {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): install Debian's chromium-driver \
                     (apt-get install chromium-driver; testing/tools.sh does)"
                )
            });
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut r) = ureq::get(&format!("{base}/status")).call()
                && r.body_mut().read_json::<Value>().is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver on port {port} did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut browser = Self { driver, base, session: String::new() };
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            // Nothing but the page under test: no traffic off loopback.
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
        ];
        let session = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            }}}),
        );
        browser.session = session["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {session}")).to_string();
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `Err` for any error but a stale element: the page rebuilds its rows every two
    /// seconds, so an element found a moment ago may be gone; callers look again.
    fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response = match method {
            "GET" => agent.get(&url).call(),
            "DELETE" => agent.delete(&url).call(),
            _ => agent.post(&url).send_json(body),
        }
        .unwrap();
        let status = response.status().as_u16();
        let answer: Value = response.body_mut().read_json().unwrap();
        if status == 200 {
            return Ok(answer["value"].clone());
        }
        assert_eq!(answer["value"]["error"], "stale element reference", "WebDriver {method} {path}: {answer}");
        Err(format!("WebDriver {method} {path}: stale element"))
    }

    fn session(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn open(&self, url: &str) {
        self.call("POST", &self.session("/url"), json!({"url": url}));
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.call("POST", &self.session("/elements"), json!({"using": "css selector", "value": css}));
        let reference = |e: &Value| {
            // The W3C key, or the legacy `ELEMENT` an older driver answers with.
            e.get(ELEMENT).or_else(|| e.get("ELEMENT")).and_then(Value::as_str).map(String::from)
        };
        found.as_array().unwrap().iter().map(|e| reference(e).unwrap_or_else(|| panic!("no element in {e}"))).collect()
    }

    /// The element's text; empty when it went stale.
    fn text(&self, element: &str) -> String {
        self.try_call("GET", &self.session(&format!("/element/{element}/text")), Value::Null)
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    fn displayed(&self, element: &str) -> bool {
        self.try_call("GET", &self.session(&format!("/element/{element}/displayed")), Value::Null)
            .is_ok_and(|v| v == true)
    }

    fn click(&self, element: &str) -> bool {
        self.try_call("POST", &self.session(&format!("/element/{element}/click")), json!({})).is_ok()
    }

    /// Clicks the element `css` matches, looking again while the page replaces it.
    fn click_css(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.find_all(css).first().is_some_and(|e| self.click(e)) {
            assert!(Instant::now() < deadline, "cannot click {css}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn type_text(&self, element: &str, text: &str) {
        self.call("POST", &self.session(&format!("/element/{element}/value")), json!({"text": text}));
    }

    /// Waits until `css` matches an element for which `ok` holds; returns it.
    fn wait_for(&self, css: &str, what: &str, ok: impl Fn(&Self, &str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.find_all(css).into_iter().find(|e| ok(self, e)) {
                return e;
            }
            let body = self.find_all("body").first().map(|b| self.text(b)).unwrap_or_default();
            assert!(Instant::now() < deadline, "the page shows no {what}; it shows:\n{body}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let url = format!("{}/session/{}", self.base, self.session);
            let _ = ureq::delete(&url).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn the_page_asks_for_the_token_lists_the_jobs_and_stops_one_with_a_savepoint() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(tmp.path(), &tmp.path().join("state"), Some("page-token-3f"));
    let mut jobs = Vec::new();
    for name in ["first page job", "second page job"] {
        let (input, out) =
            (tmp.path().join(format!("in-{}", jobs.len())), tmp.path().join(format!("out-{}", jobs.len())));
        write_csv_input(&input, 1, 100, false);
        jobs.push(server.run(json!({"programArgsList": job_args(name, &input, &out, 0)})));
    }
    let browser = Browser::start();
    browser.open(&format!("{}/", server.base));

    // Without the token the page cannot read the jobs; it asks for the token.
    let input = browser
        .wait_for("#token", "token field", |b, _| b.find_all("#token-form").first().is_some_and(|f| b.displayed(f)));
    assert!(browser.find_all("tr[data-job-id]").is_empty());
    browser.type_text(&input, "page-token-3f");
    browser.click_css("#token-form button");

    // Both jobs listed, running.
    for jid in &jobs {
        browser.wait_for(&format!("tr[data-job-id='{jid}']"), &format!("running row of {jid}"), |b, row| {
            let text = b.text(row);
            text.contains(jid.as_str()) && text.contains("RUNNING")
        });
    }
    let rows = browser.find_all("tr[data-job-id]");
    assert_eq!(rows.len(), 2);
    server.wait_checkpoints(&jobs[0], 1);

    // The stop button: a savepoint, then the job ends.
    browser.click_css(&format!("tr[data-job-id='{}'] button[data-action='stop']", jobs[0]));
    server.wait_state(&jobs[0], "FINISHED", Duration::from_secs(30));
    let message = browser.wait_for("#message", "savepoint message", |b, m| b.text(m).contains(" at "));
    let message = browser.text(&message);
    let location = message.split(" at ").nth(1).unwrap().trim().to_string();
    assert!(message.contains(&jobs[0]), "{message}");
    assert!(Path::new(&location).join("_metadata").is_file(), "{message}");
    let name = Path::new(&location).file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with(&format!("savepoint-{}-", &jobs[0][..6])), "{name}");
    browser
        .wait_for(&format!("tr[data-job-id='{}']", jobs[0]), "finished row", |b, row| b.text(row).contains("FINISHED"));
    assert_eq!(server.state(&jobs[1]), "RUNNING");
}
