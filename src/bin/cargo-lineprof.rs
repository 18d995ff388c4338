//! `cargo lineprof`: see [`lineprof_cli::workflow::cargo`].

fn main() -> std::process::ExitCode {
    lineprof_cli::workflow::cargo::main(std::env::args().skip(1).collect())
}
