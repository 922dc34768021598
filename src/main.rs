//! `p11ca`: parse the command line, run, and map errors to exit codes. Everything else is in
//! the library and in `cli`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::args::cfssl_style(std::env::args_os());
    let parsed = match cli::args::Cli::try_parse_from(args) {
        Ok(p) => p,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli::run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("p11ca: error: {e}");
            ExitCode::from(e.kind().exit_code())
        }
    }
}
