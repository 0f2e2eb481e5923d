//! The command lines of the in-process benchmarks (`ack_bench`, `recovery_bench`): `--flag value`
//! pairs, numbers within bounds, one-line errors.

/// The `--flag value` pairs of the command line, or `None` for no arguments, `-h` or `--help`.
pub fn pairs() -> Result<Option<Vec<(String, String)>>, String> {
    let mut it = std::env::args().skip(1);
    if it.len() == 0 {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        out.push((flag, value));
    }
    Ok(Some(out))
}

/// `value` as a number from 1 to `max`, or an error naming the flag.
pub fn number(flag: &str, value: &str, max: u64) -> Result<u64, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or(format!("{flag} {value}: expected 1 to {max}"))
}
