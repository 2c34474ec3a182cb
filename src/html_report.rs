//! `report.html`: one self-contained page for a run. Everything it shows is inside the file:
//! pictures are embedded as `data:image/png;base64,...` URLs, the style sheet is inline, and
//! the only links are to the page's own sections (`#curves`). No script, no font, nothing
//! fetched, so it opens from the file system with no network, and it can be mailed as is.
//!
//! A [`Page`] is a title and a list of [`Section`]s, each a list of [`Block`]s (a paragraph, a
//! table, preformatted text, a picture); [`render`] turns it into HTML, escaping all text.
//! What goes on a run's page is the CLI's choice (`src/cli/pictures.rs`); this module only
//! lays it out.

use std::fmt::Write as _;

/// A table: a header row and rows of cells (text, escaped when rendered).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Rows to highlight (0-based), e.g. the best epoch.
    pub highlight: Vec<usize>,
}

/// One piece of a section.
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Text(String),
    Table(Table),
    /// Monospaced text kept as laid out (the model summary, the classification report).
    Pre(String),
    /// A PNG picture, embedded.
    Picture {
        id: String,
        caption: String,
        png: Vec<u8>,
        width: u32,
        height: u32,
    },
}

/// A titled part of the page, with an anchor `id` for the table of contents.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub id: String,
    pub heading: String,
    pub blocks: Vec<Block>,
}

/// The whole page.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub title: String,
    /// A line under the title (what made the page, and when).
    pub subtitle: String,
    pub sections: Vec<Section>,
}

/// Standard base64 (RFC 4648, section 4: `A-Z a-z 0-9 + /`, `=` padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        // Three bytes are 24 bits, read as four 6-bit digits; a short chunk is padded with
        // zero bits and its missing digits written as '='.
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `s` with the five HTML special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An anchor id made of `[a-z0-9-]` only (so it needs no escaping anywhere).
fn anchor(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

const STYLE: &str = "
body { font-family: 'DejaVu Sans', 'Helvetica Neue', Arial, sans-serif; color: #1e1e1e;
  margin: 0 auto; padding: 16px 24px 48px; max-width: 1260px; line-height: 1.45; }
h1 { font-size: 26px; margin: 8px 0 2px; }
h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.sub { color: #555; margin: 0 0 12px; }
nav { font-size: 14px; margin: 8px 0 4px; }
nav a { margin-right: 14px; color: #1f77b4; text-decoration: none; }
table { border-collapse: collapse; font-size: 14px; margin: 8px 0 12px; }
th, td { border: 1px solid #ddd; padding: 3px 10px; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
tr.hl td { background: #fff3d6; font-weight: bold; }
pre { font-size: 13px; background: #f8f8f8; border: 1px solid #e4e4e4; padding: 10px;
  overflow-x: auto; }
figure { margin: 12px 0 20px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { font-size: 14px; color: #444; margin-top: 6px; }
";

/// The page as HTML5.
pub fn render(page: &Page) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<p class=\"sub\">{}</p>\n<nav>",
        escape(&page.title),
        escape(&page.title),
        escape(&page.subtitle)
    );
    for s in &page.sections {
        let _ = write!(h, "<a href=\"#{}\">{}</a>", anchor(&s.id), escape(&s.heading));
    }
    h += "</nav>\n";
    for s in &page.sections {
        let _ = writeln!(h, "<section id=\"{}\">\n<h2>{}</h2>", anchor(&s.id), escape(&s.heading));
        for b in &s.blocks {
            block(&mut h, b);
        }
        h += "</section>\n";
    }
    h += "</body>\n</html>\n";
    h
}

fn block(h: &mut String, b: &Block) {
    match b {
        Block::Text(t) => {
            let _ = writeln!(h, "<p>{}</p>", escape(t));
        }
        Block::Pre(t) => {
            let _ = writeln!(h, "<pre>{}</pre>", escape(t));
        }
        Block::Table(t) => {
            h.push_str("<table>\n<tr>");
            for c in &t.header {
                let _ = write!(h, "<th>{}</th>", escape(c));
            }
            h.push_str("</tr>\n");
            for (i, row) in t.rows.iter().enumerate() {
                h.push_str(if t.highlight.contains(&i) { "<tr class=\"hl\">" } else { "<tr>" });
                for c in row {
                    let _ = write!(h, "<td>{}</td>", escape(c));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table>\n");
        }
        Block::Picture { id, caption, png, width, height } => {
            let _ = writeln!(
                h,
                "<figure id=\"fig-{}\"><img alt=\"{}\" width=\"{width}\" height=\"{height}\" \
                 src=\"data:image/png;base64,{}\"><figcaption>{}</figcaption></figure>",
                anchor(id),
                escape(caption),
                base64(png),
                escape(caption)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        // RFC 4648, section 10.
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded, "{plain:?}");
        }
        // All 6-bit digits, including the last two of the alphabet.
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">T&C's</a>"), "&lt;a href=&quot;x&quot;&gt;T&amp;C&#39;s&lt;/a&gt;");
        let page = Page {
            title: "<script>".into(),
            subtitle: String::new(),
            sections: vec![Section {
                id: "a b".into(),
                heading: "x".into(),
                blocks: vec![Block::Pre("1 < 2".into())],
            }],
        };
        let html = render(&page);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("<pre>1 &lt; 2</pre>") && html.contains("id=\"a-b\""), "{html}");
    }
}
