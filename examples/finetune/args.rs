//! Command-line values the examples check as they parse them, so a bad one is a usage
//! error naming the option, not a panic or a run of NaNs.

/// A count the run needs at least one of (a width, tokens, steps).
pub fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        other => other.map_err(|e| e.to_string()),
    }
}

/// A finite positive learning rate.
pub fn learning_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(lr) if lr.is_finite() && lr > 0.0 => Ok(lr),
        Ok(lr) => Err(format!("{lr} is not a finite positive learning rate")),
        Err(e) => Err(e.to_string()),
    }
}
