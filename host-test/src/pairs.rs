//! The proxy-wasm map encoding (u32 LE count, then (key_len, value_len) pairs, then each key and
//! value followed by a NUL), in both directions.
//!
//! Decoding is bounds-checked: a malformed map from the guest is an error, never an out-of-bounds
//! read (Envoy's own decoder trusts the lengths; we are stricter on purpose).

/// One header: name and value, both raw bytes.
pub(crate) type Pair = (Vec<u8>, Vec<u8>);

/// Serialises pairs the way the guest SDK expects them.
pub(crate) fn encode(pairs: &[Pair]) -> Vec<u8> {
    let mut size = 4;
    for (k, v) in pairs {
        size += 8 + k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(pairs.len()).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&len32(k.len()).to_le_bytes());
        out.extend_from_slice(&len32(v.len()).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Lengths in guest memory are u32; nothing the host serialises comes near 4 GiB.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Why a serialised map from the guest was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Parses a serialised map; an empty buffer (or the single `0x00` byte the spec allows) is an
/// empty map.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<Pair>, Malformed> {
    if bytes.len() <= 1 {
        return Ok(Vec::new());
    }
    let count = read_u32(bytes, 0)? as usize;
    let header_end = count.checked_mul(8).and_then(|n| n.checked_add(4)).ok_or(Malformed)?;
    if header_end > bytes.len() {
        return Err(Malformed);
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = header_end;
    for i in 0..count {
        let key_len = read_u32(bytes, 4 + i * 8)? as usize;
        let value_len = read_u32(bytes, 8 + i * 8)? as usize;
        let key = take(bytes, &mut at, key_len)?;
        let value = take(bytes, &mut at, value_len)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, Malformed> {
    let end = at.checked_add(4).ok_or(Malformed)?;
    let raw: [u8; 4] = bytes.get(at..end).and_then(|s| s.try_into().ok()).ok_or(Malformed)?;
    Ok(u32::from_le_bytes(raw))
}

/// Takes `len` bytes at `*at` and skips the NUL after them.
fn take(bytes: &[u8], at: &mut usize, len: usize) -> Result<Vec<u8>, Malformed> {
    let end = at.checked_add(len).ok_or(Malformed)?;
    let value = bytes.get(*at..end).ok_or(Malformed)?.to_vec();
    // The terminating NUL may be missing after the very last value; Envoy tolerates that too.
    *at = end.saturating_add(1);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> Pair {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[test]
    fn the_spec_example_encodes_byte_for_byte() {
        let bytes = encode(&[p("a", "1"), p("b", "22")]);
        assert_eq!(
            bytes,
            [
                2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, b'1', 0, b'b',
                0, b'2', b'2', 0
            ]
        );
    }

    #[test]
    fn a_map_survives_a_round_trip() {
        let pairs =
            vec![p(":path", "/v1/x?y=1"), p("x-empty", ""), (b"bin".to_vec(), vec![0xff, 0])];
        assert_eq!(decode(&encode(&pairs)), Ok(pairs));
    }

    #[test]
    fn empty_inputs_are_empty_maps() {
        assert_eq!(decode(&[]), Ok(vec![]));
        assert_eq!(decode(&[0]), Ok(vec![]));
        assert_eq!(decode(&[0, 0, 0, 0]), Ok(vec![]));
    }

    #[test]
    fn lengths_past_the_end_are_refused_instead_of_read() {
        assert_eq!(decode(&[1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, b'a']), Err(Malformed));
        assert_eq!(decode(&[0xff, 0xff, 0xff, 0xff, 0]), Err(Malformed));
    }
}
