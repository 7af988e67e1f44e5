//! One rule for text that came from a scanned page, applied at every sink.
//!
//! A scanned page is an attacker: its titles, URLs, cookie names, storage keys, event names and
//! request bodies reach terminals, Markdown pull-request comments, XML, email, Slack and HTML.
//! Every such string is rendered through the one function of this module that fits its output:
//!
//! | output | function | what it guarantees |
//! |---|---|---|
//! | terminal, email plain text, SARIF/JSON message text | [`plain`] | one line; C0/C1 controls, ESC sequences, bidi overrides, zero-width and line-separator characters shown as visible escapes (`\x1b`, `\n`, `\u{202e}`) |
//! | Markdown (code span / table cell / code block line) | [`md_code`], [`md_cell`], [`md_fence`] | inside code, so no heading, link, image, emphasis or @mention; fence-safe; newline-safe in tables |
//! | XML (JUnit) | [`xml`] | well-formed: characters XML forbids become visible escapes, markup escaped, attribute-safe |
//! | Slack-compatible webhook `text` | [`slack`] | `&`, `<`, `>` escaped, so `<!channel>` and `<https://x|y>` are text |
//! | HTML | [`html`] | escaped for element content and quoted attributes, controls visible |
//! | HTML template that escapes by itself (the dashboard's maud) | [`html_text`] | controls visible and cut; the template escapes |
//!
//! JSON outputs are written by serde (always valid JSON); their free-text fields still go through
//! [`plain`]. Every evidence string is cut to a bounded length around what matched ([`excerpt`],
//! [`evidence`]); "…" marks each cut.

use std::borrow::Cow;

/// Most characters of an evidence string in any output.
pub const EVIDENCE_MAX: usize = 320;
/// Most characters of any other page-derived string (URL, name, key, title) in prose outputs.
pub const TEXT_MAX: usize = 200;
/// The mark of a cut.
pub const CUT: char = '…';

/// Whether `c` must never reach an output as itself: C0 and C1 controls (ESC included), DEL,
/// bidi embeddings/overrides/isolates and marks, zero-width characters, and line separators.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

fn push_visible(out: &mut String, c: char) {
    use std::fmt::Write as _;
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// Text for a terminal, an email's plain-text part or a JSON message: one line, every control,
/// escape sequence, bidi override and invisible character shown as a visible escape.
pub fn plain(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hidden(c) {
            push_visible(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`plain`], cut to [`TEXT_MAX`] characters: a name, key, URL or title in a terminal or email.
pub fn terminal(s: &str) -> String {
    plain(&cut(s, TEXT_MAX)).into_owned()
}

/// Text for XML element content or a quoted attribute: visible escapes for what XML forbids (and
/// for every other control), markup escaped.
pub fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in plain(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Noncharacters are not XML `Char`s either.
            '\u{fffe}' | '\u{ffff}' => push_visible(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// Text for a Slack-compatible webhook `text` (mrkdwn): [`plain`] with `&`, `<` and `>` escaped as
/// Slack requires, so nothing from a page can mention, link or ping.
pub fn slack(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if hidden(c) && c != '\n' => push_visible(&mut out, c),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for HTML element content and quoted attribute values (no other change).
pub fn esc(s: &str) -> String {
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

/// Page-derived text for HTML: controls and bidi overrides visible, then escaped.
pub fn html(s: &str) -> String {
    esc(&plain(s))
}

/// Page-derived text for an HTML template that escapes everything it inserts (maud): controls
/// and bidi overrides visible, cut to `max` characters. Never pass the result through markup
/// that is not escaped.
pub fn html_text(s: &str, max: usize) -> String {
    plain(&cut(s, max)).into_owned()
}

/// Like [`html`], with every case-insensitive occurrence of `term` wrapped in `<mark>`.
pub fn html_marked(s: &str, term: Option<&str>) -> String {
    let visible = plain(s);
    let Some(term) = term
        .map(|t| plain(t).into_owned())
        .filter(|t| !t.is_empty())
    else {
        return esc(&visible);
    };
    let lower = visible.to_lowercase();
    let needle = term.to_lowercase();
    if lower.len() != visible.len() {
        // Lowercasing changed byte offsets (rare scripts): no highlight rather than a wrong one.
        return esc(&visible);
    }
    let mut out = String::new();
    let mut at = 0;
    while let Some(i) = lower[at..].find(&needle) {
        let (start, end) = (at + i, at + i + needle.len());
        if !visible.is_char_boundary(start) || !visible.is_char_boundary(end) {
            break;
        }
        out.push_str(&esc(&visible[at..start]));
        out.push_str("<mark>");
        out.push_str(&esc(&visible[start..end]));
        out.push_str("</mark>");
        at = end;
    }
    out.push_str(&esc(&visible[at..]));
    out
}

/// A Markdown code span holding `s`: no link, mention, heading or emphasis can come out of it.
/// Not for table cells (see [`md_cell`]).
pub fn md_code(s: &str) -> String {
    code_span(&plain(&cut(s, TEXT_MAX)))
}

/// A Markdown code span for a GFM table cell: like [`md_code`], with `|` and `\` escaped so the
/// cell cannot be split.
pub fn md_cell(s: &str) -> String {
    let text = plain(&cut(s, TEXT_MAX))
        .replace('\\', "\\\\")
        .replace('|', "\\|");
    code_span(&text)
}

/// A line inside a fenced code block: one line (so it can never close the fence), cut.
pub fn md_fence(s: &str) -> String {
    plain(&cut(s, TEXT_MAX)).into_owned()
}

/// The shortest backtick fence (at least 3) that no line of `body` can close.
pub fn fence_for(body: &str) -> String {
    "`".repeat(longest_run(body, '`').max(2) + 1)
}

fn longest_run(s: &str, ch: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in s.chars() {
        run = if c == ch { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

fn code_span(text: &str) -> String {
    if text.is_empty() {
        return "` `".into();
    }
    let ticks = "`".repeat(longest_run(text, '`') + 1);
    // A space on each side keeps a leading/trailing backtick (or space) from touching the fence.
    let pad = if text.starts_with(['`', ' ']) || text.ends_with(['`', ' ']) {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{text}{pad}{ticks}")
}

/// `s` cut to at most `max` characters from its start, "…" marking the cut.
pub fn cut(s: &str, max: usize) -> Cow<'_, str> {
    if s.chars().count() <= max {
        return Cow::Borrowed(s);
    }
    let head: String = s.chars().take(max.saturating_sub(1)).collect();
    Cow::Owned(format!("{head}{CUT}"))
}

/// At most `max` characters of `s` around the first case-insensitive occurrence of `focus` (or
/// from the start when there is none), "…" marking each cut.
pub fn excerpt(s: &str, focus: Option<&str>, max: usize) -> String {
    let total = s.chars().count();
    if total <= max {
        return s.to_string();
    }
    let at = focus
        .filter(|f| !f.is_empty())
        .and_then(|f| find_ci(s, f).map(|byte| (s[..byte].chars().count(), f.chars().count())));
    let (start, len) = at.unwrap_or((0, 0));
    // Room for the cut marks, then centre the match.
    let room = max.saturating_sub(2).max(1);
    let before = room.saturating_sub(len) / 2;
    let from = if len >= room {
        start
    } else {
        start.saturating_sub(before).min(total - room.min(total))
    };
    let to = (from + room).min(total);
    let mut out = String::new();
    if from > 0 {
        out.push(CUT);
    }
    out.extend(s.chars().skip(from).take(to - from));
    if to < total {
        out.push(CUT);
    }
    out
}

/// An evidence string for any output: at most [`EVIDENCE_MAX`] characters around `matched`.
pub fn evidence(s: &str, matched: Option<&str>) -> String {
    excerpt(s, matched, EVIDENCE_MAX)
}

/// Byte offset of the first case-insensitive (ASCII and simple Unicode) occurrence of `needle`.
fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    if let Some(i) = hay.find(needle) {
        return Some(i);
    }
    let lower = hay.to_lowercase();
    if lower.len() != hay.len() {
        return None;
    }
    lower
        .find(&needle.to_lowercase())
        .filter(|i| hay.is_char_boundary(*i))
}

/// "a, b, c and 4 more": at most `max` items, then how many were left out.
pub fn list_more<T: AsRef<str>>(
    items: &[T],
    max: usize,
    render: impl Fn(&str) -> String,
) -> String {
    let shown: Vec<String> = items.iter().take(max).map(|i| render(i.as_ref())).collect();
    let more = items.len().saturating_sub(max);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\u{1b}[2J\u{1b}]8;;https://evil.test\u{7}click\u{1b}]8;;\u{7}\nfake line\r\0\u{9b}31m\u{202e}txt.exe\u{2066}\u{200b}|`@here";

    fn no_hidden(s: &str) {
        assert!(!s.chars().any(hidden), "{s:?}");
    }

    #[test]
    fn plain_makes_every_control_and_bidi_character_visible() {
        let p = plain(HOSTILE);
        no_hidden(&p);
        assert!(!p.contains('\n'));
        assert!(
            p.starts_with("a\\x1b[2J\\x1b]8;;https://evil.test\\x07click"),
            "{p}"
        );
        assert!(p.contains("\\nfake line\\r\\x00\\u{9b}31m\\u{202e}txt.exe\\u{2066}\\u{200b}"));
        assert!(matches!(plain("ordinary text"), Cow::Borrowed(_)));
    }

    #[test]
    fn xml_is_well_formed_for_any_input() {
        let x = xml(HOSTILE);
        let doc = format!("<a b=\"{x}\">{x}</a>");
        let parsed = roxmltree::Document::parse(&doc).expect("well-formed");
        assert_eq!(parsed.root_element().text(), Some(plain(HOSTILE).as_ref()));
        assert_eq!(
            parsed.root_element().attribute("b"),
            Some(plain(HOSTILE).as_ref())
        );
        assert!(xml("]]></failure><x>").contains("]]&gt;&lt;/failure&gt;"));
    }

    #[test]
    fn slack_text_cannot_ping_or_link() {
        let s = slack("<!channel> <@U123> <https://evil.test|click> & co\u{1b}[2J\nnext");
        assert_eq!(
            s,
            "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil.test|click&gt; &amp; co\\x1b[2J\nnext"
        );
    }

    #[test]
    fn markdown_code_spans_survive_backticks_pipes_and_newlines() {
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`x`"), "`` `x` ``");
        assert_eq!(md_code(""), "` `");
        assert_eq!(md_cell("a|b\\"), "`a\\|b\\\\`");
        assert_eq!(md_code("x\n# Heading"), "`x\\n# Heading`");
        assert_eq!(fence_for("no ticks"), "```");
        assert_eq!(fence_for("x ```` y"), "`````");
        assert_eq!(md_fence("```\n# h"), "```\\n# h");
    }

    #[test]
    fn excerpts_are_bounded_and_centred_on_the_match() {
        let long = format!("{}semaglutide{}", "x".repeat(5000), "y".repeat(5000));
        let e = excerpt(&long, Some("SEMAGLUTIDE"), 60);
        assert_eq!(e.chars().count(), 60);
        assert!(
            e.starts_with('…') && e.ends_with('…') && e.contains("semaglutide"),
            "{e}"
        );
        let head = excerpt(&long, None, 20);
        assert!(head.starts_with("xxx") && head.ends_with('…'));
        assert_eq!(head.chars().count(), 19);
        let tail = excerpt(&format!("{}end", "z".repeat(100)), Some("end"), 20);
        assert!(tail.starts_with('…') && tail.ends_with("end"), "{tail}");
        assert_eq!(excerpt("short", Some("x"), 20), "short");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(
            list_more(&["a", "b", "c"], 2, str::to_string),
            "a, b and 1 more"
        );
    }

    #[test]
    fn html_marks_the_matched_term_and_escapes_the_rest() {
        assert_eq!(
            html_marked("<b>Ozempic</b> ozempic", Some("OZEMPIC")),
            "&lt;b&gt;<mark>Ozempic</mark>&lt;/b&gt; <mark>ozempic</mark>"
        );
        assert_eq!(html_marked("a\u{202e}b", None), "a\\u{202e}b");
    }

    proptest::proptest! {
        #[test]
        fn no_sink_lets_a_hidden_character_through(s in "\\PC*|[\\x00-\\x1f\\x7f-\\u{9f}\\u{202a}-\\u{202e}`|<>&\\\\a-z\\n]*") {
            no_hidden(&plain(&s));
            no_hidden(&xml(&s));
            no_hidden(&html(&s));
            no_hidden(&md_code(&s));
            no_hidden(&md_cell(&s));
            proptest::prop_assert!(!slack(&s).contains('<'));
            let doc = format!("<a>{}</a>", xml(&s));
            proptest::prop_assert!(roxmltree::Document::parse(&doc).is_ok());
            proptest::prop_assert!(excerpt(&s, Some("a"), 30).chars().count() <= 30);
        }
    }
}
