//! The web page in a real headless Chromium: Debian's `chromium`, driven by
//! Python playwright (tests/browser/page_test.py) against `mawqif serve` on
//! 127.0.0.1 with the `cues` baseline. `.ci/run` installs both and sets MAWQIF_REQUIRE_BROWSER=1;
//! elsewhere a missing browser is a loud skip. Screenshots are kept under
//! target/tmp/browser/ (not committed).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::http::ServeProcess;

/// The browser and the Python that drives it, or why they are missing.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("MAWQIF_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.is_file() {
        return Err(format!(
            "{} not found (apt-get install chromium)",
            chromium.display()
        ));
    }
    let python = std::env::var_os("MAWQIF_BROWSER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-venv/bin/python")
        });
    let has_playwright = Command::new(&python)
        .args(["-c", "import playwright.sync_api"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_playwright {
        return Err(format!(
            "{} cannot import playwright (bash .ci/run makes target/browser-venv)",
            python.display()
        ));
    }
    Ok((chromium, python))
}

#[test]
fn page_in_headless_chromium() {
    let (chromium, python) = match browser_tools() {
        Ok(tools) => tools,
        Err(why) => {
            assert!(
                std::env::var("MAWQIF_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "MAWQIF_REQUIRE_BROWSER=1 but the browser test cannot run: {why}"
            );
            eprintln!(
                "\n==============================================================\n\
                 SKIPPED: page_in_headless_chromium: {why}\n\
                 The web page was NOT tested in a browser.\n\
                 ==============================================================\n"
            );
            return;
        }
    };
    // The rule baseline: real labels of every kind on the article (the tiny
    // random model's head puts nearly everything in one class), no model files.
    let server = ServeProcess::start(Path::new("cues"), &["--threads", "1"]);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let _ = std::fs::remove_dir_all(&out);
    let mut child = Command::new(&python)
        .arg("tests/browser/page_test.py")
        .args(["--url", &server.base])
        .args(["--article", "eval/fixtures/article.txt"])
        .arg("--chromium")
        .arg(&chromium)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tests/browser/page_test.py");
    let deadline = Instant::now() + Duration::from_secs(240);
    while child.try_wait().expect("wait for the page test").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the page test ran past 240 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("page test output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "page test failed:\n{stdout}\n{stderr}\nserver log:\n{}",
        server.stderr_text()
    );
    eprintln!("page test: {stdout}");
    for shot in ["page-desktop.png", "page-hover.png", "page-phone.png"] {
        let bytes = std::fs::read(out.join(shot)).expect(shot);
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{shot} is not a real screenshot"
        );
    }
}
