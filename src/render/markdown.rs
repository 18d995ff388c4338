//! GitHub-flavoured markdown pieces for pull-request comments and job
//! summaries (`$GITHUB_STEP_SUMMARY`): table cells that survive any source
//! text.
//!
//! In a GFM table a `|` ends the cell even inside a code span unless it is
//! escaped as `\|` (the table is split before inline parsing, and the
//! backslash is removed then); a code span holding backticks needs a
//! longer run of backticks around it, and spaces when it starts or ends
//! with one.

/// `text` as inline code inside a table cell.
pub fn code(text: &str) -> String {
    let text = text.replace(['\n', '\r'], " ");
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') || text.is_empty() {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", text.replace('|', "\\|"))
}

/// Plain `text` in a table cell: markdown's punctuation escaped.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// A table: a header row, the alignment row (`right` per column) and rows.
pub fn table(out: &mut String, headers: &[&str], right: &[bool], rows: &[Vec<String>]) {
    let row = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    out.push_str(&row(&headers.iter().map(|h| plain(h)).collect::<Vec<_>>()));
    let align: Vec<String> = (0..headers.len())
        .map(|i| {
            if right.get(i).copied().unwrap_or(false) {
                "---:"
            } else {
                "---"
            }
            .to_string()
        })
        .collect();
    out.push_str(&row(&align));
    for r in rows {
        out.push_str(&row(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_hold_pipes_and_backticks() {
        assert_eq!(code("let v = vec![0; n];"), "`let v = vec![0; n];`");
        assert_eq!(code("a | b"), "`a \\| b`");
        assert_eq!(code("x.map(|a| a)"), "`x.map(\\|a\\| a)`");
        assert_eq!(code("say `hi`"), "`` say `hi` ``");
        assert_eq!(code("a ``b`` c"), "```a ``b`` c```");
        assert_eq!(code(""), "`  `");
    }

    #[test]
    fn plain_text_is_escaped() {
        assert_eq!(plain("tests::big_one"), "tests::big\\_one");
        assert_eq!(plain("<T as Trait>"), "\\<T as Trait\\>");
        assert_eq!(plain("a|b"), "a\\|b");
    }
}
