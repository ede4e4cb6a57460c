//! Deterministic generator of large, realistic donor exports for benchmarks.
//!
//! ```text
//! cargo run --release --example gen_donors -- --rows 1000000 --seed 1 > donors-1m.csv
//! cargo run --release --example gen_donors -- --rows 10000000 --seed 10 --out donors-10m.csv
//! ```
//!
//! Flags:
//!
//! * `--rows N`     data rows to write (default 1000); the header comes on top.
//! * `--seed S`     PRNG seed (default 1). The same `--rows`, `--seed` and flags always give a
//!   byte-identical file: no clock, no environment, no hash-map ordering is involved.
//! * `--out FILE`   write to FILE instead of stdout.
//! * `--crlf`       end records with CRLF instead of LF.
//! * `--bom`        start the file with a UTF-8 byte-order mark.
//!
//! The columns are those of `fixtures/donors.csv` (`donor_id,email,first_name,last_name,
//! total_given,last_gift_date,first_gift_date,gift_count,country,city,gift_aid,notes`), in the
//! style of `fixtures/make_fixtures.py`, at roughly 100 bytes a row:
//!
//! * UTF-8 names with accents, Polish and Japanese names (about 45% of rows hold a non-ASCII character);
//!   email local parts are mostly ASCII transliterations, about 2% keep the accents (SMTPUTF8).
//! * RFC 4180 quoting where needed: cities such as `"Washington, D.C."` and `"Cork, Co. Cork"`,
//!   notes with commas and doubled quotes, and about 1 row in 5000 with a line break inside
//!   its notes.
//! * About 0.5% invalid email addresses (no `@`, `@@`, no dot in the domain, a space,
//!   a display name, a trailing dot, a `mailto:` prefix, empty) and about 1% duplicates
//!   (an earlier row's address again, differing only in letter case). Every other address is
//!   unique, even case-insensitively: each local part ends in the row number.
//! * `total_given` a plain number (integer or two decimals), dates ISO `YYYY-MM-DD` between
//!   2019-01-01 and 2026-11-28 with `first_gift_date <= last_gift_date`, `gift_count = 1`
//!   exactly when first and last gift are the same gift, about 0.2% legacy rows with no
//!   `last_gift_date`, `gift_aid` `yes`/`no` (only GB donors say yes), ISO country codes.
//!
//! Giving columns are drawn so that with `--as-of 2026-11-29` and the rules of
//! `fixtures/campaign.toml` roughly 10% of rows are major, 27% lapsed, 18% first-time and 45%
//! regular.
//!
//! The PRNG is splitmix64, written out here so the crate needs no `rand`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

const HEADER: &str = "donor_id,email,first_name,last_name,total_given,last_gift_date,\
first_gift_date,gift_count,country,city,gift_aid,notes";

/// Per country: code, weight, first names, last names, cities, email domains.
type Country = (
    &'static str,
    u64,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const COUNTRIES: &[Country] = &[
    (
        "GB",
        45,
        &[
            "Oliver", "Amelia", "Harry", "Isla", "George", "Zoë", "Jack", "Chloë", "Noah", "Ava",
            "Rhys", "Siân", "Callum", "Freya", "Aled", "Niamh", "Priya", "Mohammed", "Grace",
            "Ewan",
        ],
        &[
            "Smith",
            "Jones",
            "Taylor",
            "Brown",
            "Williams",
            "Wilson",
            "Evans",
            "Thomas",
            "Roberts",
            "Patel",
            "Khan",
            "Hughes",
            "Ó Conchúir",
            "MacDonald",
            "Davies",
            "Clarke",
            "Wright",
            "Hall",
            "Ahmed",
            "Ellis",
        ],
        &[
            "London",
            "Manchester",
            "Leeds",
            "Bristol",
            "Cardiff",
            "Edinburgh",
            "Glasgow",
            "Newcastle upon Tyne",
            "Norwich",
            "York",
            "Brighton and Hove",
            "Belfast",
        ],
        &[
            "btinternet.example",
            "gmail.example",
            "outlook.example",
            "example.org",
            "example.com",
        ],
    ),
    (
        "IE",
        10,
        &[
            "Siobhán", "Seán", "Aoife", "Ciarán", "Niamh", "Pádraig", "Saoirse", "Eoin", "Róisín",
            "Cillian",
        ],
        &[
            "O'Brien",
            "Murphy",
            "Kelly",
            "O'Sullivan",
            "Walsh",
            "Byrne",
            "Ó Súilleabháin",
            "McCarthy",
            "Ryan",
            "O'Connor",
        ],
        &[
            "Dublin",
            "Cork, Co. Cork",
            "Galway",
            "Limerick",
            "Waterford",
        ],
        &["eircom.example", "gmail.example", "example.net"],
    ),
    (
        "US",
        12,
        &[
            "James", "Mary", "Michael", "Jennifer", "David", "Linda", "Emily", "Daniel", "Sofia",
            "Marcus",
        ],
        &[
            "Johnson",
            "Garcia",
            "Miller",
            "Davis",
            "Rodriguez",
            "Martinez",
            "Anderson",
            "Lee",
            "Washington",
            "Nguyen",
        ],
        &[
            "Washington, D.C.",
            "New York",
            "Boston",
            "Chicago",
            "Seattle",
            "Austin",
        ],
        &[
            "gmail.example",
            "yahoo.example",
            "icloud.example",
            "example.com",
        ],
    ),
    (
        "DE",
        9,
        &[
            "Jürgen",
            "Anna",
            "Lukas",
            "Sophie",
            "Maximilian",
            "Jörg",
            "Lena",
            "Björn",
            "Käthe",
            "Felix",
        ],
        &[
            "Müller",
            "Schmidt",
            "Schneider",
            "Fischer",
            "Weiß",
            "Meyer",
            "Wagner",
            "Becker",
            "Schäfer",
            "Groß",
        ],
        &[
            "Berlin",
            "München",
            "Köln",
            "Hamburg",
            "Frankfurt am Main",
            "Düsseldorf",
        ],
        &[
            "gmx.example",
            "web.example",
            "t-online.example",
            "example.net",
        ],
    ),
    (
        "FR",
        8,
        &[
            "Chloé",
            "Élodie",
            "Jérôme",
            "François",
            "Hélène",
            "Loïc",
            "Amélie",
            "Théo",
            "Inès",
            "Gaël",
        ],
        &[
            "Martin",
            "Bernard",
            "Dubois",
            "Lefèvre",
            "Moreau",
            "Girard",
            "Rousseau",
            "Fontaine",
            "Chevalier",
            "Lambert",
        ],
        &["Paris", "Lyon", "Marseille", "Toulouse", "Nantes", "Lille"],
        &[
            "orange.example",
            "free.example",
            "laposte.example",
            "example.org",
        ],
    ),
    (
        "PL",
        6,
        &[
            "Łukasz",
            "Agnieszka",
            "Paweł",
            "Małgorzata",
            "Wojciech",
            "Zofia",
            "Michał",
            "Joanna",
        ],
        &[
            "Kowalski",
            "Nowak",
            "Wiśniewska",
            "Wójcik",
            "Kamiński",
            "Lewandowska",
            "Zieliński",
            "Szymańska",
        ],
        &["Warszawa", "Kraków", "Łódź", "Wrocław", "Gdańsk", "Poznań"],
        &["wp.example", "onet.example", "example.com"],
    ),
    (
        "JP",
        4,
        &["太郎", "花子", "健", "由美", "翔太", "さくら"],
        &["田中", "佐藤", "鈴木", "高橋", "渡辺", "山本"],
        &["東京", "大阪", "京都", "札幌", "福岡"],
        &["docomo.example", "example.jp.example", "gmail.example"],
    ),
    (
        "ES",
        6,
        &[
            "José", "María", "Lucía", "Álvaro", "Iñaki", "Begoña", "Sergio", "Nuria",
        ],
        &[
            "García",
            "Fernández",
            "López",
            "Martínez",
            "Sánchez",
            "Pérez",
            "Gómez",
            "Muñoz",
        ],
        &[
            "Madrid",
            "Barcelona",
            "Sevilla",
            "València",
            "Bilbao",
            "A Coruña",
        ],
        &["telefonica.example", "gmail.example", "example.org"],
    ),
];

/// Notes as they would appear in a CRM's free-text field (quoted on output where needed).
const NOTES: &[&str] = &[
    "Prefers post, not phone",
    "Met at the 2024 gala, table 7",
    "Legacy pledge discussed",
    "Monthly standing order",
    "Do not call on Sundays",
    "Volunteer, Saturday shop",
    "In memory of her mother",
    "Called to say \"thanks\", then asked about Gift Aid",
    "Said \"no more post, email only\"",
    "Corporate match via employer",
];

/// Rare notes with a line break inside the quoted field.
const MULTILINE_NOTES: &[&str] = &[
    "Call before Christmas.\nAsked about legacy giving, please follow up",
    "Wrote: \"merci, à l'année prochaine\"\nSent a card",
];

/// Romaji for the Japanese names, for email local parts.
const ROMAJI: &[(&str, &str)] = &[
    ("太郎", "taro"),
    ("花子", "hanako"),
    ("健", "ken"),
    ("由美", "yumi"),
    ("翔太", "shota"),
    ("さくら", "sakura"),
    ("田中", "tanaka"),
    ("佐藤", "sato"),
    ("鈴木", "suzuki"),
    ("高橋", "takahashi"),
    ("渡辺", "watanabe"),
    ("山本", "yamamoto"),
];

/// Email domains no valid row uses, for the planted invalid addresses.
const INVALID_DOMAINS: &[&str] = &["example.org", "gmail", "example.com."];

/// Day numbers (days since 1970-01-01) of the date range and of the campaign boundaries.
const FIRST_DAY: i64 = days_from_civil(2019, 1, 1);
const LAST_DAY: i64 = days_from_civil(2026, 11, 28);
const AS_OF: i64 = days_from_civil(2026, 11, 29);
const MAJOR_SINCE: i64 = AS_OF - 365;
const LAPSED_BEFORE: i64 = days_from_civil(2025, 5, 29);

/// splitmix64: tiny, fast, and good enough for synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is negligible for small `n`).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` of a day number.
fn civil_from_days(z: i64) -> [u8; 10] {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut out = *b"0000-00-00";
    let digits = |v: i64, out: &mut [u8]| {
        let mut v = v;
        for b in out.iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(y, &mut out[0..4]);
    digits(m, &mut out[5..7]);
    digits(d, &mut out[8..10]);
    out
}

/// ASCII form of a name for an email local part: lower case, accents dropped, no spaces or
/// apostrophes.
fn ascii_fold(name: &str) -> String {
    if let Some((_, romaji)) = ROMAJI.iter().find(|(k, _)| *k == name) {
        return (*romaji).to_owned();
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        let folded = match c {
            'à' | 'á' | 'â' | 'ä' | 'ã' | 'ą' => "a",
            'ç' | 'ć' => "c",
            'è' | 'é' | 'ê' | 'ë' | 'ę' => "e",
            'ì' | 'í' | 'î' | 'ï' => "i",
            'ñ' | 'ń' => "n",
            'ò' | 'ó' | 'ô' | 'ö' => "o",
            'ù' | 'ú' | 'û' | 'ü' => "u",
            'ß' => "ss",
            'ł' => "l",
            'ś' => "s",
            'ż' | 'ź' => "z",
            '\'' | ' ' => "",
            c if c.is_ascii_alphabetic() => {
                out.push(c);
                continue;
            }
            c => panic!("no ASCII fold for {c:?} in {name:?}"),
        };
        out.push_str(folded);
    }
    out
}

/// A name as written in the file, and its forms for email local parts.
struct Name {
    /// CSV field text (quoted if needed).
    field: Vec<u8>,
    /// ASCII lower-case form.
    ascii: Vec<u8>,
    /// Lower-case form keeping accents (for the few SMTPUTF8 addresses).
    utf8: Vec<u8>,
}

impl Name {
    fn new(s: &str) -> Name {
        let utf8: String = s
            .chars()
            .flat_map(char::to_lowercase)
            .filter(|c| *c != ' ' && *c != '\'')
            .collect();
        Name {
            field: csv_field(s),
            ascii: ascii_fold(s).into_bytes(),
            utf8: utf8.into_bytes(),
        }
    }
}

struct CountryData {
    code: &'static str,
    firsts: Vec<Name>,
    lasts: Vec<Name>,
    cities: Vec<Vec<u8>>,
    domains: &'static [&'static str],
}

/// A field as CSV: quoted, with quotes doubled, when it holds a comma, quote or line break.
fn csv_field(s: &str) -> Vec<u8> {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        let mut v = Vec::with_capacity(s.len() + 4);
        v.push(b'"');
        for b in s.bytes() {
            if b == b'"' {
                v.push(b'"');
            }
            v.push(b);
        }
        v.push(b'"');
        v
    } else {
        s.as_bytes().to_vec()
    }
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// An amount of money between `lo` and `hi`: 60% whole numbers, the rest with two decimals.
fn push_money(out: &mut Vec<u8>, rng: &mut Rng, lo: u64, hi: u64) {
    if rng.chance(600) {
        push_u64(out, lo + rng.below(hi - lo + 1));
    } else {
        let cents = lo * 100 + rng.below((hi - lo) * 100);
        push_u64(out, cents / 100);
        out.push(b'.');
        let c = cents % 100;
        out.push(b'0' + (c / 10) as u8);
        out.push(b'0' + (c % 10) as u8);
    }
}

/// Letter-case variants of an earlier address, for planted duplicates.
fn recase(email: &[u8], how: u64) -> Vec<u8> {
    let at = email.iter().position(|&b| b == b'@').unwrap_or(0);
    let mut v = email.to_vec();
    match how {
        0 => v.make_ascii_uppercase(),
        1 => v[at..].make_ascii_uppercase(),
        2 => {
            for b in &mut v {
                *b = if b.is_ascii_lowercase() {
                    b.to_ascii_uppercase()
                } else {
                    b.to_ascii_lowercase()
                };
            }
        }
        _ => {
            // Title case: capital after every non-letter.
            let mut start = true;
            for b in &mut v {
                if start {
                    b.make_ascii_uppercase();
                }
                start = !b.is_ascii_alphabetic();
            }
        }
    }
    if v == email {
        v.make_ascii_uppercase();
    }
    v
}

struct Options {
    rows: u64,
    seed: u64,
    out: Option<String>,
    crlf: bool,
    bom: bool,
}

/// What `--help` prints (on stdout, exit 0).
const USAGE: &str = "usage: gen_donors [--rows N] [--seed S] [--out FILE] [--crlf] [--bom]

Writes a synthetic donor export (CSV) for benchmarks and tests: N rows (default 1000), the
same for the same seed (default 1), to FILE or stdout; --crlf for CRLF line endings, --bom
for a UTF-8 byte order mark.";

/// Parsed arguments, or `--help`.
enum Parsed {
    Run(Options),
    Help,
}

fn parse_args() -> Result<Parsed, String> {
    let mut o = Options {
        rows: 1000,
        seed: 1,
        out: None,
        crlf: false,
        bom: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--rows" => {
                o.rows = value("--rows")?
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--rows: {e}"))?
            }
            "--seed" => {
                o.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--out" => o.out = Some(value("--out")?),
            "--crlf" => o.crlf = true,
            "--bom" => o.bom = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            other => return Err(format!("unknown argument {other:?}; try --help")),
        }
    }
    Ok(Parsed::Run(o))
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gen_donors: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &opts.out {
        Some(path) => File::create(path).and_then(|f| generate(&opts, f)),
        None => generate(&opts, io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error worth reporting.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen_donors: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(opts: &Options, out: impl Write) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let eol: &[u8] = if opts.crlf { b"\r\n" } else { b"\n" };
    let countries: Vec<CountryData> = COUNTRIES
        .iter()
        .map(|(code, _, firsts, lasts, cities, domains)| CountryData {
            code,
            firsts: firsts.iter().map(|s| Name::new(s)).collect(),
            lasts: lasts.iter().map(|s| Name::new(s)).collect(),
            cities: cities.iter().map(|s| csv_field(s)).collect(),
            domains,
        })
        .collect();
    let weight_total: u64 = COUNTRIES.iter().map(|c| c.1).sum();
    let notes: Vec<Vec<u8>> = NOTES.iter().map(|s| csv_field(s)).collect();
    let multiline: Vec<Vec<u8>> = MULTILINE_NOTES.iter().map(|s| csv_field(s)).collect();
    let dates: Vec<[u8; 10]> = (FIRST_DAY..=LAST_DAY).map(civil_from_days).collect();
    let date = |day: i64| &dates[(day - FIRST_DAY) as usize];

    // Mix the seed once so that seeds 1, 2, 3 ... start far apart.
    let mut rng = Rng(opts.seed ^ 0x6a09_e667_f3bc_c909);
    rng.next();

    // Recent valid ASCII addresses, the pool planted duplicates are drawn from.
    const RECENT: usize = 4096;
    let mut recent: Vec<Vec<u8>> = Vec::with_capacity(RECENT);
    let mut recent_next = 0usize;

    if opts.bom {
        w.write_all("\u{feff}".as_bytes())?;
    }
    w.write_all(HEADER.as_bytes())?;
    w.write_all(eol)?;

    let mut line: Vec<u8> = Vec::with_capacity(512);
    let mut email: Vec<u8> = Vec::with_capacity(128);
    let mut donor_id: u64 = 100_000;
    for row in 1..=opts.rows {
        line.clear();
        email.clear();

        // Who.
        let mut pick = rng.below(weight_total);
        let mut ci = 0;
        while pick >= COUNTRIES[ci].1 {
            pick -= COUNTRIES[ci].1;
            ci += 1;
        }
        let c = &countries[ci];
        let first = rng.pick(&c.firsts);
        let last = rng.pick(&c.lasts);
        let domain = rng.pick(c.domains).as_bytes();

        // Email: unique by construction (names hold no digits, the row number ends the local
        // part), except for the planted duplicates and invalid addresses.
        let kind = rng.below(1000);
        if kind < 10 && !recent.is_empty() {
            let earlier = &recent[rng.below(recent.len() as u64) as usize];
            email.extend_from_slice(&recase(earlier, rng.below(4)));
        } else {
            let utf8 = kind >= 15 && rng.chance(20);
            let (f, l) = if utf8 {
                (&first.utf8, &last.utf8)
            } else {
                (&first.ascii, &last.ascii)
            };
            match rng.below(100) {
                0..45 => {
                    email.extend_from_slice(f);
                    email.push(b'.');
                    email.extend_from_slice(l);
                }
                45..65 => {
                    let initial = std::str::from_utf8(f)
                        .ok()
                        .and_then(|s| s.chars().next())
                        .map_or(1, char::len_utf8);
                    email.extend_from_slice(&f[..initial]);
                    email.extend_from_slice(l);
                }
                65..80 => email.extend_from_slice(f),
                80..90 => {
                    email.extend_from_slice(f);
                    email.push(b'_');
                    email.extend_from_slice(l);
                }
                _ => {
                    email.extend_from_slice(l);
                    email.push(b'.');
                    email.extend_from_slice(f);
                }
            }
            push_u64(&mut email, row);
            if kind < 15 {
                // Invalid, about 0.5% of rows.
                let bad_domain = rng.pick(INVALID_DOMAINS).as_bytes();
                match rng.below(8) {
                    0 => {
                        email.push(b'.');
                        email.extend_from_slice(domain);
                    }
                    1 => {
                        email.extend_from_slice(b"@@");
                        email.extend_from_slice(domain);
                    }
                    2 => email.extend_from_slice(b"@gmail"),
                    3 => {
                        email.insert(1, b' ');
                        email.push(b'@');
                        email.extend_from_slice(bad_domain);
                    }
                    4 => {
                        let addr = std::mem::take(&mut email);
                        email.extend_from_slice(&first.field);
                        email.extend_from_slice(b" <");
                        email.extend_from_slice(&addr);
                        email.push(b'@');
                        email.extend_from_slice(domain);
                        email.push(b'>');
                        let quoted = csv_field(std::str::from_utf8(&email).unwrap_or(""));
                        email = quoted;
                    }
                    5 => {
                        email.push(b'@');
                        email.extend_from_slice(domain);
                        email.push(b'.');
                    }
                    6 => {
                        email.splice(0..0, *b"mailto:");
                        email.push(b'@');
                        email.extend_from_slice(domain);
                    }
                    _ => email.clear(),
                }
            } else {
                email.push(b'@');
                email.extend_from_slice(domain);
                // Some exports keep the donor's capitals.
                if rng.chance(150) {
                    email[0].make_ascii_uppercase();
                }
                if !utf8 {
                    if recent.len() < RECENT {
                        recent.push(email.clone());
                    } else {
                        recent[recent_next].clear();
                        recent[recent_next].extend_from_slice(&email);
                        recent_next = (recent_next + 1) % RECENT;
                    }
                }
            }
        }

        donor_id += 1 + rng.below(8);
        line.push(b'D');
        push_u64(&mut line, donor_id);
        line.push(b',');
        line.extend_from_slice(&email);
        line.push(b',');
        line.extend_from_slice(&first.field);
        line.push(b',');
        line.extend_from_slice(&last.field);
        line.push(b',');

        // Giving history, aimed at one segment of fixtures/campaign.toml.
        let target = rng.below(1000);
        let (last_day, count): (Option<i64>, u64);
        if target < 100 {
            // major
            push_money(&mut line, &mut rng, 1000, 25_000);
            last_day = Some(rng.range(MAJOR_SINCE, LAST_DAY));
            count = 2 + rng.below(59);
        } else if target < 370 {
            // lapsed
            push_money(&mut line, &mut rng, 5, 3000);
            last_day = Some(rng.range(FIRST_DAY, LAPSED_BEFORE - 1));
            count = *rng.pick(&[1, 1, 2, 3, 4, 6, 10]);
        } else if target < 550 {
            // first_time
            push_money(&mut line, &mut rng, 5, 500);
            last_day = Some(rng.range(LAPSED_BEFORE, LAST_DAY));
            count = 1;
        } else if target < 998 {
            // regular
            push_money(&mut line, &mut rng, 10, 999);
            last_day = Some(rng.range(LAPSED_BEFORE, LAST_DAY));
            count = 2 + rng.below(39);
        } else {
            // legacy import: several gifts, last gift date unknown
            push_money(&mut line, &mut rng, 20, 800);
            last_day = None;
            count = 2 + rng.below(8);
        }
        line.push(b',');
        let first_day = match last_day {
            Some(d) if count == 1 => d,
            Some(d) => rng.range(FIRST_DAY, d),
            None => rng.range(FIRST_DAY, days_from_civil(2022, 12, 31)),
        };
        if let Some(d) = last_day {
            line.extend_from_slice(date(d));
        }
        line.push(b',');
        line.extend_from_slice(date(first_day));
        line.push(b',');
        push_u64(&mut line, count);
        line.push(b',');
        line.extend_from_slice(c.code.as_bytes());
        line.push(b',');
        line.extend_from_slice(rng.pick::<Vec<u8>>(&c.cities));
        line.push(b',');
        let gift_aid = c.code == "GB" && rng.below(3) < 2;
        line.extend_from_slice(if gift_aid { b"yes" } else { b"no" });
        line.push(b',');
        if last_day.is_none() {
            line.extend_from_slice(b"\"Legacy import, last gift date unknown\"");
        } else if rng.chance(120) {
            if rng.below(600) == 0 {
                line.extend_from_slice(rng.pick::<Vec<u8>>(&multiline));
            } else {
                line.extend_from_slice(rng.pick::<Vec<u8>>(&notes));
            }
        }
        line.extend_from_slice(eol);
        w.write_all(&line)?;
    }
    w.flush()
}
