//! A real browser renders `report.html`: headless Chromium (Debian's
//! `chromium-headless-shell`, or `chromium`) opens the page of a small synthetic run from the
//! file system, with no network, and takes a screenshot. The test checks that the screenshot
//! is not blank, and finds each embedded picture in it, pixel for pixel: the regions where the
//! page puts its pictures hold those images, drawn at their size.
//!
//! CI installs the browser (`.ci/run`). Elsewhere, without it, the test says so and passes;
//! with `CI` set, a missing browser is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run, stderr, stdout, temp_dir};

const BROWSERS: [&str; 4] = ["chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"];

/// The first browser binary found on `PATH` (and in `/usr/lib/chromium`).
fn find_browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push(PathBuf::from("/usr/lib/chromium"));
    BROWSERS.iter().flat_map(|b| dirs.iter().map(move |d| d.join(b))).find(|p| p.is_file())
}

/// An RGBA or RGB PNG decoded to RGB: `(width, height, rgb)`.
fn decode_rgb(bytes: &[u8]) -> (usize, usize, Vec<u8>) {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = dec.read_info().expect("a PNG");
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).expect("PNG data");
    let ch = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let rgb = buf[..info.buffer_size()].chunks(ch).flat_map(|p| [p[0], p[1], p[2]]).collect();
    (info.width as usize, info.height as usize, rgb)
}

/// Standard base64 decoding (RFC 4648).
fn unbase64(s: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not a base64 digit: {c}"),
    } as u32;
    let mut out = Vec::new();
    for quad in s.as_bytes().chunks(4) {
        let pad = quad.iter().filter(|&&c| c == b'=').count();
        let n = quad.iter().take(4 - pad).enumerate().fold(0u32, |n, (k, &c)| n | digit(c) << (18 - 6 * k));
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..3 - pad]);
    }
    out
}

/// The embedded PNGs of a page, in page order.
fn embedded(html: &str) -> Vec<Vec<u8>> {
    let key = "src=\"data:image/png;base64,";
    html.match_indices(key)
        .map(|(i, _)| {
            let rest = &html[i + key.len()..];
            unbase64(&rest[..rest.find('"').unwrap()])
        })
        .collect()
}

struct Image {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Image {
    fn at(&self, x: usize, y: usize) -> [u8; 3] {
        let i = 3 * (y * self.w + x);
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= 3)
}

/// Where `pic` sits in `shot`, found by a few distinctive pixels, then checked whole: at
/// least 99% of its pixels within 3 levels of the screenshot's.
fn find(shot: &Image, pic: &Image) -> Option<(usize, usize)> {
    // Probe pixels: non-white ones spread over the picture.
    let mut probes = Vec::new();
    for k in 0..400 {
        let (x, y) = ((k * 7919) % pic.w, (k * 104_729 / pic.w.max(1) + k * 31) % pic.h);
        if pic.at(x, y) != [255, 255, 255] {
            probes.push((x, y));
        }
        if probes.len() == 24 {
            break;
        }
    }
    assert!(!probes.is_empty(), "a blank picture cannot be found");
    for oy in 0..=shot.h.checked_sub(pic.h)? {
        for ox in 0..=shot.w.checked_sub(pic.w)? {
            if probes.iter().all(|&(x, y)| close(shot.at(ox + x, oy + y), pic.at(x, y))) {
                let mut good = 0;
                for y in 0..pic.h {
                    for x in 0..pic.w {
                        good += close(shot.at(ox + x, oy + y), pic.at(x, y)) as usize;
                    }
                }
                if good as f64 >= 0.99 * (pic.w * pic.h) as f64 {
                    return Some((ox, oy));
                }
            }
        }
    }
    None
}

#[test]
fn a_real_browser_renders_the_report_with_its_pictures() {
    let Some(browser) = find_browser() else {
        assert!(std::env::var_os("CI").is_none(), "CI must install chromium-headless-shell (.ci/run)");
        eprintln!(
            "note: no Chromium found ({}); skipping the browser test (apt-get install chromium-headless-shell)",
            BROWSERS.join(", ")
        );
        return;
    };
    let dir = temp_dir("browser");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    common::write_bar_idx(&data, 400, 100, 8);
    let out = dir.join("run");
    let o = run(&[
        "train",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-download",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "train failed:\n{}\n{}", stdout(&o), stderr(&o));
    let page = out.join("report.html");
    let pictures = embedded(&std::fs::read_to_string(&page).unwrap());
    assert_eq!(pictures.len(), 4);

    let shot_path = dir.join("screenshot.png");
    let profile = dir.join("profile");
    let (w, h) = (1400, 9000);
    let status = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--force-color-profile=srgb",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot_path.display()))
        .arg(format!("--window-size={w},{h}"))
        .arg(format!("file://{}", absolute(&page).display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", browser.display()));
    assert!(
        shot_path.is_file(),
        "{} wrote no screenshot ({}):\n{}",
        browser.display(),
        status.status,
        String::from_utf8_lossy(&status.stderr)
    );
    let (sw, sh, rgb) = decode_rgb(&std::fs::read(&shot_path).unwrap());
    assert_eq!((sw, sh), (w, h), "the screenshot's size");
    let shot = Image { w: sw, h: sh, rgb };

    // Not blank: a good share of non-white pixels, in many colours.
    let non_white = shot.rgb.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    assert!(non_white > sw * sh / 50, "the screenshot is nearly blank ({non_white} non-white pixels)");
    let mut colours: Vec<[u8; 3]> = shot.rgb.chunks(3).step_by(97).map(|p| [p[0], p[1], p[2]]).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 100, "only {} colours on the screenshot", colours.len());

    // Each picture where the page put it, at its size.
    let mut tops = Vec::new();
    for (k, bytes) in pictures.iter().enumerate() {
        let (pw, ph, prgb) = decode_rgb(bytes);
        let pic = Image { w: pw, h: ph, rgb: prgb };
        let at =
            find(&shot, &pic).unwrap_or_else(|| panic!("picture {k} ({pw}x{ph}) is not on the screenshot"));
        tops.push(at.1);
    }
    assert!(tops.windows(2).all(|t| t[0] < t[1]), "the pictures are not in page order: {tops:?}");
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}
