//! How the examples end: an error is printed as its message, not in the Debug form that
//! `fn main() -> Result` prints, and the exit status is 1.

use std::process::ExitCode;

pub fn report(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
