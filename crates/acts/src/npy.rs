//! A guard in front of `.npy` header parsing. npyz hands the header (a Python dict literal) to
//! a backtracking parser whose time grows exponentially with bracket nesting: a 262-byte file
//! with a run of `{` kept `acts import` busy for over a minute (found by the `import` fuzz
//! target). numpy writes a plain array's header as `{'descr': '<f4', 'fortran_order': False,
//! 'shape': (3, 4), }` — two levels — so headers nested deeper than a structured dtype's three
//! levels (brackets inside quotes count too: they stall it as well), with more than 256
//! brackets, with control bytes, or longer than 64 KiB, are refused before parsing.

/// The longest header accepted (numpy's version-1 limit).
pub const MAX_HEADER: usize = 1 << 16;

/// The deepest bracket nesting accepted (a structured dtype: dict, list, tuple).
pub const MAX_DEPTH: usize = 3;

/// The most brackets accepted in a header.
pub const MAX_BRACKETS: usize = 256;

/// `Err(why)` when the `.npy` bytes (at least their preamble and header) carry a header the
/// parser should not see; `Ok` otherwise, including for files that are not `.npy` at all
/// (the parser reports those).
pub fn check_npy_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Ok(());
    }
    let (len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Ok(()),
    };
    if len > MAX_HEADER {
        return Err(format!(
            "a .npy header of {len} bytes (numpy writes at most {MAX_HEADER} for an array)"
        ));
    }
    let text = &bytes[start..(start + len).min(bytes.len())];
    if let Some(&c) = text
        .iter()
        .find(|&&c| c < 0x20 && !matches!(c, b'\n' | b'\r' | b'\t' | b' '))
    {
        return Err(format!(
            "a .npy header with the control byte 0x{c:02x} (numpy writes printable text)"
        ));
    }
    // Brackets are counted inside quotes too: the parser backtracks over quoted braces as well
    // (a `{` run inside a string stalled it as long as one outside).
    let (mut depth, mut deepest, mut opened) = (0usize, 0usize, 0usize);
    for &b in text {
        match b {
            b'{' | b'(' | b'[' => {
                depth += 1;
                opened += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_DEPTH {
        return Err(format!(
            "a .npy header nested {deepest} brackets deep (a plain array's has 2, a structured \
             dtype's {MAX_DEPTH})"
        ));
    }
    if opened > MAX_BRACKETS {
        return Err(format!(
            "a .npy header with {opened} brackets (at most {MAX_BRACKETS}: a dtype of that many \
             fields is not an array of activations)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(header: &str) -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((header.len() as u16).to_le_bytes());
        b.extend(header.as_bytes());
        b
    }

    #[test]
    fn numpys_headers_pass_and_deep_or_huge_ones_do_not() {
        let plain = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }\n";
        assert!(check_npy_header(&npy(plain)).is_ok());
        let record =
            "{'descr': [('a', '<f4'), ('b', '<i8')], 'fortran_order': False, 'shape': (2,), }";
        assert!(check_npy_header(&npy(record)).is_ok());
        // Brackets count inside quotes too (the parser stalls on those as well), and control
        // bytes are refused.
        let quoted = format!("{{'descr': r'{}', 'shape': (1,)}}", "{".repeat(20));
        assert!(
            check_npy_header(&npy(&quoted))
                .unwrap_err()
                .contains("22 brackets deep")
        );
        let nul = "{'descr': '<f4\0', 'shape': (1,)}";
        assert!(check_npy_header(&npy(nul)).unwrap_err().contains("0x00"));
        let many = format!("{{'descr': '<f4', 'shape': (1,), {}}}", "(),".repeat(300));
        assert!(
            check_npy_header(&npy(&many))
                .unwrap_err()
                .contains("brackets (at most")
        );
        let deep = format!("{{'descr': '<f2',{}", "{".repeat(40));
        let e = check_npy_header(&npy(&deep)).unwrap_err();
        assert!(e.contains("41 brackets deep"), "{e}");
        let mut huge = b"\x93NUMPY\x02\x00".to_vec();
        huge.extend(u32::MAX.to_le_bytes());
        assert!(
            check_npy_header(&huge)
                .unwrap_err()
                .contains("4294967295 bytes")
        );
        assert!(check_npy_header(b"not numpy").is_ok());
    }
}
