//! Small text helpers shared by the commands' reports (tables, dates, day counts).

use time::OffsetDateTime;

use crate::untrusted;

pub(crate) use crate::reconcile::NotCovered;

/// Up to three names, then a count of the rest.
pub(crate) fn short_names(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
    match names.len().saturating_sub(3) {
        0 => shown.join(", "),
        rest => format!("{} (+{rest} more)", shown.join(", ")),
    }
}

pub(crate) fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> String {
    match (not_after - now).whole_days() {
        1 => "1 day".to_string(),
        n => format!("{n} days"),
    }
}

pub(crate) fn ymd(t: OffsetDateTime) -> String {
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Left-aligned columns separated by two spaces; the last column is not padded. Cells come
/// from outside (file names, certificate names, API messages): their control and bidi
/// characters are escaped, so no cell can break a row or reorder the table.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|c| untrusted::escape(c).into_owned())
                .collect()
        })
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::from(" ");
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            line.push(' ');
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = w.saturating_sub(cell.chars().count()) + 1;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
