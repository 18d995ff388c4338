//! `#[lineprof::profile]`: line_profiler's `@profile` for Rust.
//!
//! The attribute rewrites the body of the function it marks so that each
//! line of it, when it starts, tells a per-call guard (`Call`) its counter
//! slot: the guard counts the hit and closes the line that was open, whose
//! time runs from its own start to this event (callees included). The guard
//! closes the last line when the call ends, by return or by unwinding.
//!
//! Counting rules (line_profiler's):
//! - a statement counts on the line of its first token, once per
//!   execution, however many lines it spans; a second statement starting
//!   on a line already marked is not marked again;
//! - a `for` loop's line counts each test of the loop (each call of the
//!   iterator's `next`): iterations + 1 when the loop ends by itself; a
//!   `while` loop's line counts each test of its condition;
//! - a `match` arm counts on the line of its pattern when it is taken; an
//!   `else if` on the line of its condition;
//! - closures, `async` blocks and items inside the function are not
//!   instrumented: their time is on the line that runs them;
//! - nothing inside a macro call's arguments is marked.

use std::collections::HashMap;

use proc_macro2::{Delimiter, Literal, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::visit_mut::{self, VisitMut};
use syn::{Block, Expr, ItemFn, Stmt};

/// Times each line of the marked function: how often it started (hits) and
/// the wall time from its start to the next line of the same call
/// (callees included). See the crate documentation for the counting rules.
#[proc_macro_attribute]
pub fn profile(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand(attr.into(), item.into()).into()
}

fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(t) = attr.into_iter().next() {
        return error(t.span(), "#[lineprof::profile] takes no arguments", item);
    }
    let mut f: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(_) => {
            return error(
                Span::call_site(),
                "#[lineprof::profile] goes on a function with a body (a free function, or a \
                 method in an `impl` block)",
                item,
            )
        }
    };
    if let Some(a) = f.sig.asyncness {
        return error(
            a.span,
            "#[lineprof::profile] does not support `async fn` yet: mark the synchronous \
             functions it calls instead",
            item,
        );
    }
    if let Some(c) = f.sig.constness {
        return error(
            c.span,
            "#[lineprof::profile] cannot time a `const fn` (it may run at compile time)",
            item,
        );
    }
    let mut ins = Instrument::new();
    ins.visit_block_mut(&mut f.block);
    let slots = ins.slots.len() + 1;
    let lines = ins
        .slots
        .iter()
        .map(|&(_, span)| quote_spanned!(span=> ::core::line!()));
    let fn_line = {
        let span = f.sig.fn_token.span;
        quote_spanned!(span=> ::core::line!())
    };
    let call = &ins.call;
    let stmts = &f.block.stmts;
    let attrs = &f.attrs;
    let vis = &f.vis;
    let sig = &f.sig;
    quote! {
        #(#attrs)* #vis #sig {
            fn __lineprof_path() -> &'static str {
                fn here() {}
                ::lineprof::__timers::type_name_of(here)
            }
            static __LINEPROF_LINES: [u32; #slots] = [0, #(#lines),*];
            static __LINEPROF_FN: ::lineprof::__timers::Function =
                ::lineprof::__timers::Function::new(
                    __lineprof_path,
                    ::core::file!(),
                    #fn_line,
                    &__LINEPROF_LINES,
                );
            let #call = ::lineprof::__timers::enter(&__LINEPROF_FN);
            #(#stmts)*
        }
    }
}

/// The item unchanged (so that its other errors are still reported) and
/// a compile error at `span`.
fn error(span: Span, msg: &str, item: TokenStream) -> TokenStream {
    let e = syn::Error::new(span, msg).to_compile_error();
    quote!(#e #item)
}

/// The line of a span's start (0 when the compiler has none).
fn line_of(span: Span) -> usize {
    span.start().line
}

/// The span of the first token of `t` after its outer attributes.
fn first_span(t: &impl ToTokens) -> Span {
    let mut tokens = t.to_token_stream().into_iter().peekable();
    while let Some(tt) = tokens.next() {
        match (&tt, tokens.peek()) {
            (TokenTree::Punct(p), Some(TokenTree::Group(g)))
                if p.as_char() == '#' && g.delimiter() == Delimiter::Bracket =>
            {
                tokens.next();
            }
            _ => return tt.span(),
        }
    }
    Span::call_site()
}

struct Instrument {
    /// The guard's name, hygienic: the user's code cannot name it.
    call: syn::Ident,
    /// Slot `i + 1`: its source line and the span it was taken from.
    slots: Vec<(usize, Span)>,
    by_line: HashMap<usize, usize>,
    /// Line of the last mark placed, in source order.
    last_line: usize,
}

impl Instrument {
    fn new() -> Self {
        Instrument {
            call: syn::Ident::new("__lineprof_call", Span::mixed_site()),
            slots: Vec::new(),
            by_line: HashMap::new(),
            last_line: usize::MAX,
        }
    }

    fn slot(&mut self, span: Span) -> usize {
        let line = line_of(span);
        self.last_line = line;
        let next = self.slots.len() + 1;
        *self.by_line.entry(line).or_insert_with(|| {
            self.slots.push((line, span));
            next
        })
    }

    /// A mark for the line of `span`, unless that line was just marked.
    fn mark(&mut self, span: Span) -> Option<Stmt> {
        if line_of(span) == self.last_line {
            return None;
        }
        let slot = self.slot(span);
        Some(self.mark_stmt(slot))
    }

    fn mark_stmt(&self, slot: usize) -> Stmt {
        let call = &self.call;
        let slot = Literal::usize_unsuffixed(slot);
        syn::parse_quote!(#call.line(#slot);)
    }

    /// `{ mark; expr }`: counts `slot` each time `expr` is evaluated.
    fn marked(&self, slot: usize, expr: &Expr) -> Expr {
        let call = &self.call;
        let slot = Literal::usize_unsuffixed(slot);
        syn::parse_quote!({ #call.line(#slot); #expr })
    }

    /// Marks each evaluation of a loop or `if` condition (the leftmost
    /// operand of a `&&` chain, the scrutinee of a `let`).
    fn mark_condition(&self, slot: usize, cond: &mut Expr) {
        match cond {
            Expr::Let(l) => *l.expr = self.marked(slot, &l.expr),
            Expr::Binary(b) if matches!(b.op, syn::BinOp::And(_)) => {
                self.mark_condition(slot, &mut b.left)
            }
            other => *other = self.marked(slot, other),
        }
    }
}

impl VisitMut for Instrument {
    fn visit_block_mut(&mut self, b: &mut Block) {
        for mut s in std::mem::take(&mut b.stmts) {
            let mark = match &s {
                Stmt::Item(_) => None,
                // Loops mark their own header, once per test.
                Stmt::Expr(Expr::ForLoop(_) | Expr::While(_), _) => None,
                Stmt::Local(l) => self.mark(l.let_token.span),
                Stmt::Macro(m) => self.mark(first_span(&m.mac)),
                Stmt::Expr(e, _) => self.mark(first_span(e)),
            };
            b.stmts.extend(mark);
            match &mut s {
                Stmt::Item(_) | Stmt::Macro(_) => {}
                Stmt::Local(l) => {
                    if let Some(init) = &mut l.init {
                        self.visit_expr_mut(&mut init.expr);
                        if let Some((_, diverge)) = &mut init.diverge {
                            self.visit_expr_mut(diverge);
                        }
                    }
                }
                Stmt::Expr(e, _) => self.visit_expr_mut(e),
            }
            b.stmts.push(s);
        }
    }

    fn visit_expr_mut(&mut self, e: &mut Expr) {
        match e {
            // Not instrumented: their time is on the line that runs them.
            Expr::Closure(_) | Expr::Async(_) | Expr::Const(_) | Expr::Macro(_) => {}
            Expr::ForLoop(f) => {
                let slot = self.slot(first_span(&*f));
                self.visit_expr_mut(&mut f.expr);
                let call = &self.call;
                let lit = Literal::usize_unsuffixed(slot);
                let iterated = self.marked(slot, &f.expr);
                *f.expr = syn::parse_quote!(::lineprof::__timers::Counted::new(
                    &#call,
                    #lit,
                    ::core::iter::IntoIterator::into_iter(#iterated),
                ));
                self.visit_block_mut(&mut f.body);
            }
            Expr::While(w) => {
                let slot = self.slot(first_span(&*w));
                self.visit_expr_mut(&mut w.cond);
                self.mark_condition(slot, &mut w.cond);
                self.visit_block_mut(&mut w.body);
            }
            Expr::Loop(l) => {
                // The body's first line starts again on every iteration.
                self.last_line = usize::MAX;
                self.visit_block_mut(&mut l.body);
            }
            Expr::If(i) => {
                self.visit_expr_mut(&mut i.cond);
                self.visit_block_mut(&mut i.then_branch);
                if let Some((_, other)) = &mut i.else_branch {
                    // Decided before the branch is visited (source order),
                    // applied after (generated blocks are never visited).
                    let slot = match &**other {
                        Expr::If(elif) => {
                            let span = first_span(&*elif.cond);
                            (line_of(span) != self.last_line).then(|| self.slot(span))
                        }
                        _ => None,
                    };
                    self.visit_expr_mut(other);
                    if let (Some(slot), Expr::If(elif)) = (slot, &mut **other) {
                        self.mark_condition(slot, &mut elif.cond);
                    }
                }
            }
            Expr::Match(m) => {
                self.visit_expr_mut(&mut m.expr);
                for arm in &mut m.arms {
                    let mark = self.mark(first_span(&arm.pat));
                    if let Some((_, guard)) = &mut arm.guard {
                        self.visit_expr_mut(guard);
                    }
                    self.visit_expr_mut(&mut arm.body);
                    if let Some(mark) = mark {
                        let body = &arm.body;
                        *arm.body = syn::parse_quote!({ #mark #body });
                    }
                }
            }
            _ => visit_mut::visit_expr_mut(self, e),
        }
    }

    fn visit_item_mut(&mut self, _: &mut syn::Item) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The source line of each mark in the expansion of `src`, in order
    /// (slot numbers mapped back to lines through the slot table).
    fn marks(src: &str) -> Vec<usize> {
        let mut f: ItemFn = syn::parse_str(src).unwrap();
        let mut ins = Instrument::new();
        ins.visit_block_mut(&mut f.block);
        let lines: Vec<usize> = ins.slots.iter().map(|s| s.0).collect();
        let out = f.block.to_token_stream().to_string();
        out.split("__lineprof_call . line (")
            .skip(1)
            .map(|rest| {
                let digits: String = rest
                    .trim()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                let n: usize = digits.parse().unwrap();
                lines[n - 1]
            })
            .collect()
    }

    #[test]
    fn each_statement_counts_on_its_first_line() {
        let src = "fn f(v: &[u32]) -> u32 {
            let a = 1;
            let b = v
                .iter()
                .sum::<u32>();
            let c = 2; let d = 3;
            a + b + c + d
        }";
        assert_eq!(marks(src), vec![2, 3, 6, 7]);
    }

    #[test]
    fn loops_mark_their_header_and_body() {
        let src = "fn f(n: u32) {
            for i in 0..n {
                g(i);
            }
            while n > 0 {
                h();
            }
            loop {
                k();
                break;
            }
        }";
        // for: the test before the loop (Counted counts the others);
        // while: each test; loop: its line once, the body each time.
        assert_eq!(marks(src), vec![2, 3, 5, 6, 8, 9, 10]);
    }

    #[test]
    fn arms_and_else_if_count_on_their_own_lines() {
        let src = "fn f(x: u32) -> u32 {
            let y = match x {
                0 => 1,
                n => {
                    n * 2
                }
            };
            if y > 3 {
                1
            } else if y > 1 {
                2
            } else { 3 }
        }";
        assert_eq!(marks(src), vec![2, 3, 4, 5, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn closures_and_macros_are_not_instrumented() {
        let src = "fn f(v: Vec<u32>) {
            let w: Vec<u32> = v.iter().map(|x| {
                let y = x + 1;
                y * 2
            }).collect();
            println!(\"{}\", {
                let z = 1;
                z
            });
        }";
        assert_eq!(marks(src), vec![2, 6]);
    }

    #[test]
    fn one_line_blocks_count_once() {
        let src = "fn f(x: u32) -> u32 {
            if x > 1 { return 1; }
            match x { 0 => 5, _ => 6 }
        }";
        assert_eq!(marks(src), vec![2, 3]);
    }

    #[test]
    fn async_and_const_fns_are_refused() {
        let out = expand(TokenStream::new(), "async fn f() {}".parse().unwrap()).to_string();
        assert!(out.contains("does not support `async fn` yet"), "{out}");
        let out = expand(TokenStream::new(), "const fn f() {}".parse().unwrap()).to_string();
        assert!(out.contains("cannot time a `const fn`"), "{out}");
        let out = expand(quote!(x), "fn f() {}".parse().unwrap()).to_string();
        assert!(out.contains("takes no arguments"), "{out}");
    }
}
