//! Identifier formats: click ids, browser ids and event ids are judged by shape, not vocabulary.
//!
//! A value a caller sends as an id is forwarded only when it has the format the platform
//! issues: the right prefix, alphabet and length, and no run of digits shaped like a card
//! number, a phone number or a date. A health word spelled inside a random-looking token cannot
//! be told apart by shape; the PHI detector still scans every outgoing string for that.

/// Why an id was refused. The code goes into reasons and metrics; the value never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdProblem {
    /// Too short or too long.
    Length,
    /// A character outside the id's alphabet.
    Alphabet,
    /// The platform's prefix is missing.
    Prefix,
    /// The dotted structure (`fb.N.TIME.ID`) does not parse.
    Structure,
    /// The embedded creation time is not a plausible recent millisecond timestamp.
    Timestamp,
    /// The random part is out of the generator's range.
    Range,
    /// Holds 13 or more digits in a row (card-number shaped).
    CardShaped,
    /// Holds 7 to 12 digits in a row (phone-number shaped).
    PhoneShaped,
    /// Holds 6 or 8 digits in a row that read as a calendar date.
    DateShaped,
}

impl IdProblem {
    /// Reason code.
    pub fn code(self) -> &'static str {
        match self {
            IdProblem::Length => "length",
            IdProblem::Alphabet => "alphabet",
            IdProblem::Prefix => "prefix",
            IdProblem::Structure => "structure",
            IdProblem::Timestamp => "timestamp",
            IdProblem::Range => "range",
            IdProblem::CardShaped => "card_shaped",
            IdProblem::PhoneShaped => "phone_shaped",
            IdProblem::DateShaped => "date_shaped",
        }
    }
}

fn base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn check_len(s: &str, min: usize, max: usize) -> Result<(), IdProblem> {
    if (min..=max).contains(&s.len()) {
        Ok(())
    } else {
        Err(IdProblem::Length)
    }
}

fn plausible_date(d: &[u8]) -> bool {
    let n = |r: std::ops::Range<usize>| -> u32 {
        d[r].iter().fold(0, |a, b| a * 10 + u32::from(b - b'0'))
    };
    let md = |m: u32, day: u32| (1..=12).contains(&m) && (1..=31).contains(&day);
    match d.len() {
        8 => {
            let y_first = (1900..=2099).contains(&n(0..4)) && md(n(4..6), n(6..8));
            let y_last =
                (1900..=2099).contains(&n(4..8)) && (md(n(0..2), n(2..4)) || md(n(2..4), n(0..2)));
            y_first || y_last
        }
        6 => md(n(2..4), n(4..6)) || md(n(0..2), n(2..4)) || md(n(2..4), n(0..2)),
        _ => false,
    }
}

/// Refuse digit runs shaped like a card number, a phone number or a date. With `join`, a `-`,
/// `_`, `/` or `+` between two digits does not end a run (`1984-03-07`, `03/07/1984`).
pub fn number_shape(s: &str, join: bool) -> Result<(), IdProblem> {
    let b = s.as_bytes();
    let mut run: Vec<u8> = Vec::new();
    let mut i = 0;
    while i <= b.len() {
        let c = b.get(i).copied();
        match c {
            Some(d) if d.is_ascii_digit() => run.push(d),
            Some(b'-' | b'_' | b'/' | b'+')
                if join && !run.is_empty() && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {}
            _ => {
                match run.len() {
                    13.. => return Err(IdProblem::CardShaped),
                    8 if plausible_date(&run) => return Err(IdProblem::DateShaped),
                    7..=12 => return Err(IdProblem::PhoneShaped),
                    6 if plausible_date(&run) => return Err(IdProblem::DateShaped),
                    _ => {}
                }
                run.clear();
            }
        }
        i += 1;
    }
    Ok(())
}

/// An opaque token: `min..=max` characters of base64url, no card-, phone- or date-shaped digits.
fn opaque(s: &str, min: usize, max: usize) -> Result<(), IdProblem> {
    check_len(s, min, max)?;
    if !s.bytes().all(base64url) {
        return Err(IdProblem::Alphabet);
    }
    number_shape(s, true)
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A caller's event id is kept when it is UUID-shaped or an opaque token of 16-64 characters
/// from `[A-Za-z0-9_-]`, and holds no card-, phone- or date-shaped digits.
pub fn check_event_id(s: &str) -> Result<(), IdProblem> {
    if is_uuid(s) {
        return s.split('-').try_for_each(|g| number_shape(g, false));
    }
    opaque(s, 16, 64)
}

/// A consent token: 16-128 characters of `[A-Za-z0-9_-]` with no card-, phone- or date-shaped
/// digits (tokens the relay issues always pass; see [`new_token`]).
pub fn check_token(s: &str) -> Result<(), IdProblem> {
    opaque(s, 16, 128)
}

/// A new random consent token (22 characters of base64url, 128 bits) that passes
/// [`check_token`].
pub fn new_token() -> String {
    use base64::Engine as _;
    loop {
        let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        if check_token(&t).is_ok() {
            return t;
        }
    }
}

/// TikTok click id: `E.C.P.` (or `E_C_P_`) then 16-500 characters of base64 / base64url.
pub fn check_ttclid(s: &str) -> Result<(), IdProblem> {
    let body = s
        .strip_prefix("E.C.P.")
        .or_else(|| s.strip_prefix("E_C_P_"))
        .ok_or(IdProblem::Prefix)?;
    check_len(body, 16, 500)?;
    let padded = body.trim_end_matches('=');
    if body.len() - padded.len() > 2
        || !padded
            .bytes()
            .all(|b| base64url(b) || b == b'+' || b == b'/')
    {
        return Err(IdProblem::Alphabet);
    }
    number_shape(body, true)
}

/// TikTok `_ttp` cookie: 16-64 characters of base64url, optionally followed by `.tt.N`.
pub fn check_ttp(s: &str) -> Result<(), IdProblem> {
    let core = match s.split_once(".tt.") {
        Some((core, n))
            if !n.is_empty() && n.len() <= 2 && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            core
        }
        Some(_) => return Err(IdProblem::Structure),
        None => s,
    };
    opaque(core, 16, 64)
}

/// Meta click id (`fbclid` from the landing URL): 16-500 characters of base64url.
pub fn check_fbclid(s: &str) -> Result<(), IdProblem> {
    opaque(s, 16, 500)
}

/// First millisecond a Meta cookie can plausibly have been created (2015-01-01).
const META_EPOCH_MS: i64 = 1_420_070_400_000;

/// `fb.<subdomain index 0-2>.<creation time, ms>.<rest>`; returns the creation time and rest.
fn meta_cookie(s: &str, now_ms: i64) -> Result<(i64, &str), IdProblem> {
    let rest = s.strip_prefix("fb.").ok_or(IdProblem::Prefix)?;
    let mut parts = rest.splitn(3, '.');
    let (Some(index), Some(time), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(IdProblem::Structure);
    };
    if !matches!(index, "0" | "1" | "2") {
        return Err(IdProblem::Structure);
    }
    if time.len() != 13 || !time.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdProblem::Timestamp);
    }
    let t: i64 = time.parse().map_err(|_| IdProblem::Timestamp)?;
    if !(META_EPOCH_MS..=now_ms + 86_400_000).contains(&t) {
        return Err(IdProblem::Timestamp);
    }
    Ok((t, rest))
}

/// Meta `_fbc` cookie: `fb.N.<ms>.<fbclid>`.
pub fn check_fbc(s: &str, now_ms: i64) -> Result<(), IdProblem> {
    check_len(s, 20, 600)?;
    let (_, click) = meta_cookie(s, now_ms)?;
    check_fbclid(click)
}

/// Meta `_fbp` cookie: `fb.N.<ms>.<random>`, the random part being the pixel's 31-bit number.
pub fn check_fbp(s: &str, now_ms: i64) -> Result<(), IdProblem> {
    check_len(s, 20, 40)?;
    let (_, random) = meta_cookie(s, now_ms)?;
    if random.is_empty() || random.len() > 10 || !random.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IdProblem::Structure);
    }
    // The random part is digits by design, so only a whole date is refused (a random number
    // reads as one about once in ten thousand).
    if plausible_date(random.as_bytes()) {
        return Err(IdProblem::DateShaped);
    }
    match random.parse::<u64>() {
        Ok(n) if n <= 2_147_483_647 => Ok(()),
        _ => Err(IdProblem::Range),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_790_000_000_000;

    #[test]
    fn event_ids_by_shape() {
        for ok in [
            "4f1c2a9e-0b7d-4c3e-9a51-2f6d8e0c1b77",
            "evt_9f2cAb31xQ0pLm7Z",
            "0a1b2c3d4e5f6a7b8c9d",
            "pw-3f9a0c1d2e3b4a5f6e7d",
        ] {
            assert_eq!(check_event_id(ok), Ok(()), "{ok}");
        }
        let bad = [
            ("4111111111111111", IdProblem::CardShaped),
            ("4111-1111-1111-1111", IdProblem::CardShaped),
            ("order_4111_1111_1111_1111", IdProblem::CardShaped),
            ("patient-5550109999-x", IdProblem::PhoneShaped),
            ("visit_555-010-9999_ab", IdProblem::PhoneShaped),
            ("booking-1984-03-07-abc", IdProblem::DateShaped),
            ("booking-19840307-abcd", IdProblem::DateShaped),
            ("dob-070384-abcdefgh", IdProblem::DateShaped),
            (
                "19840307-0b7d-4c3e-9a51-2f6d8e0c1b77",
                IdProblem::DateShaped,
            ),
            ("jane@example.com", IdProblem::Alphabet),
            ("Jane Doe booking 1", IdProblem::Alphabet),
            ("short", IdProblem::Length),
        ];
        for (id, want) in bad {
            assert_eq!(check_event_id(id), Err(want), "{id}");
        }
    }

    #[test]
    fn issued_tokens_always_pass_and_shaped_ones_do_not() {
        for _ in 0..2_000 {
            let t = new_token();
            assert_eq!(check_token(&t), Ok(()), "{t}");
        }
        assert_eq!(check_token("4111111111111111"), Err(IdProblem::CardShaped));
        assert_eq!(
            check_token("jane.doe@example.com"),
            Err(IdProblem::Alphabet)
        );
    }

    #[test]
    fn click_ids_by_format() {
        let tt = "E.C.P.CqgBaZ3xYk7LmQp2RtUv";
        assert_eq!(check_ttclid(tt), Ok(()));
        assert_eq!(check_ttclid("E_C_P_CqgBaZ3xYk7LmQp2RtUv=="), Ok(()));
        for (id, want) in [
            ("CqgBaZ3xYk7LmQp2RtUv", IdProblem::Prefix),
            ("E.C.P.abc", IdProblem::Length),
            ("E.C.P.abc type 2 diabetes xyz", IdProblem::Alphabet),
            ("E.C.P.CqgB19840307aZ3xYk7L", IdProblem::DateShaped),
            ("E.C.P.CqgB5550109999aZ3xYk7L", IdProblem::PhoneShaped),
            (
                "E.C.P.CqgBaZ3xYk7LmQp2RtUv03/07/1984",
                IdProblem::DateShaped,
            ),
            ("E.C.P.CqgB.jane.doe@mail.com.x", IdProblem::Alphabet),
        ] {
            assert_eq!(check_ttclid(id), Err(want), "{id}");
        }
        assert_eq!(check_ttp("2YbEIYoNBhNfwR9y8Gk2Ej9qzPE"), Ok(()));
        assert_eq!(check_ttp("2YbEIYoNBhNfwR9y8Gk2Ej9qzPE.tt.1"), Ok(()));
        assert_eq!(check_ttp("2F7h37Yk"), Err(IdProblem::Length));
        let fbclid = "IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk";
        assert_eq!(check_fbclid(fbclid), Ok(()));
        assert_eq!(check_fbclid("IwAR 1984-03-07 x"), Err(IdProblem::Alphabet));
        assert_eq!(
            check_fbc(&format!("fb.1.1789999999000.{fbclid}"), NOW_MS),
            Ok(())
        );
        for (id, want) in [
            (format!("fb.1.449539200000.{fbclid}"), IdProblem::Timestamp),
            (
                "fb.1.1789999999000.IwAR5550109999xyzabcdef".to_string(),
                IdProblem::PhoneShaped,
            ),
            (format!("fb.7.1789999999000.{fbclid}"), IdProblem::Structure),
            (format!("xx.1.1789999999000.{fbclid}"), IdProblem::Prefix),
            (format!("fb.1.1999999999000.{fbclid}"), IdProblem::Timestamp),
        ] {
            assert_eq!(check_fbc(&id, NOW_MS), Err(want), "{id}");
        }
        assert_eq!(check_fbp("fb.1.1596403881668.1116446470", NOW_MS), Ok(()));
        assert_eq!(
            check_fbp("fb.1.1596403881668.5550109999", NOW_MS),
            Err(IdProblem::Range)
        );
        assert_eq!(
            check_fbp("fb.1.1596403881668.Jane", NOW_MS),
            Err(IdProblem::Structure)
        );
        assert_eq!(
            check_fbp("fb.1.1596403881668.19840307", NOW_MS),
            Err(IdProblem::DateShaped)
        );
    }
}
