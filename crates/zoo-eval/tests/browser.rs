//! Opens the report in headless Chromium and checks that every figure's image actually decodes
//! and renders (not just that the HTML looks right).
//!
//! A test copy of the report gets a small inline script that, on `load`, writes
//! `images-ok=<complete with naturalWidth > 0>/<images> figures=<n> captions=<n>` into the DOM,
//! which `--dump-dom` prints. A second copy with one corrupted data URI must report one image
//! fewer, proving the check can fail. Skips (with a message) when Chromium is not installed,
//! unless `ZOO_REQUIRE_BROWSER=1`.

mod common;

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{EXPECTED_FIGURES, fake_runs};
use zoo_eval::report::write_report;

const CHECK_SCRIPT: &str = "<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const p = document.createElement('p');
  p.id = 'zoo-check';
  p.textContent = 'images-ok=' + ok + '/' + imgs.length
    + ' figures=' + document.querySelectorAll('figure').length
    + ' captions=' + document.querySelectorAll('figure > figcaption').length;
  document.body.appendChild(p);
});
</script>
";

fn find_chromium() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/chromium");
    if fixed.is_file() {
        return Some(fixed);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Runs Chromium on `page` and returns the dumped DOM; kills it after 90 s.
fn dump_dom(chromium: &Path, page: &Path, profile: &Path) -> String {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s on {}", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap().expect("reading chromium output")
}

fn check_line(dom: &str) -> String {
    let start = dom.find("id=\"zoo-check\">").unwrap_or_else(|| {
        panic!(
            "check element missing from DOM: {}",
            &dom[..dom.len().min(500)]
        )
    }) + "id=\"zoo-check\">".len();
    let end = start + dom[start..].find('<').unwrap();
    dom[start..end].to_string()
}

#[test]
fn report_figures_render_in_headless_chromium() {
    let Some(chromium) = find_chromium() else {
        let msg = "no chromium at /usr/bin/chromium or on PATH";
        if std::env::var("ZOO_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("{msg}, and ZOO_REQUIRE_BROWSER=1");
        }
        eprintln!("skipping browser test: {msg} (set ZOO_REQUIRE_BROWSER=1 to fail instead)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runs = fake_runs(dir.path());
    let out = dir.path().join("report.html");
    let summary = write_report(&runs, &out).unwrap();
    assert_eq!(summary.figures, EXPECTED_FIGURES);
    let html = fs::read_to_string(&out).unwrap();

    let good = dir.path().join("check.html");
    fs::write(
        &good,
        html.replacen("</body>", &format!("{CHECK_SCRIPT}</body>"), 1),
    )
    .unwrap();
    let dom = dump_dom(&chromium, &good, &dir.path().join("profile-good"));
    let n = EXPECTED_FIGURES;
    assert_eq!(
        check_line(&dom),
        format!("images-ok={n}/{n} figures={n} captions={n}")
    );
    for name in ["run-a", "run-b"] {
        assert!(dom.contains(name));
    }

    // Negative control: break the first image's payload; the browser must notice.
    let marker = "base64,";
    let at = html.find(marker).unwrap() + marker.len();
    let broken_html = format!("{}AAAA{}", &html[..at], &html[at + 400..]);
    let broken = dir.path().join("broken.html");
    fs::write(
        &broken,
        broken_html.replacen("</body>", &format!("{CHECK_SCRIPT}</body>"), 1),
    )
    .unwrap();
    let dom = dump_dom(&chromium, &broken, &dir.path().join("profile-broken"));
    assert_eq!(
        check_line(&dom),
        format!("images-ok={}/{n} figures={n} captions={n}", n - 1)
    );
}
