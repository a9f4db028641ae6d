//! Money: `rust_decimal::Decimal`, never a float. Lenient parsing of SingaPay's amount encodings
//! and Rupiah formatting for people.

use std::str::FromStr;

use rust_decimal::Decimal;

/// Parses an amount as SingaPay sends it, from the JSON token's text: a number (`150000`,
/// `119.84`, `1e5`) or a decimal string (`"20000.00"`). Never goes through `f64`, so nothing is
/// rounded (SingaPay sends both forms: seeds 001 and 004). Errors name the offending text.
pub fn parse_decimal_text(raw: &str) -> Result<Decimal, String> {
    let t = raw.trim();
    let inner = if let Some(s) = t.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        s.trim()
    } else {
        t
    };
    if inner.is_empty() {
        return Err(format!("empty amount {raw}"));
    }
    Decimal::from_str(inner)
        .or_else(|_| Decimal::from_scientific(inner))
        .map_err(|e| format!("amount {raw} is not a decimal: {e}"))
}

/// The canonical form of a money amount: at least two decimal places (`20000` → `20000.00`),
/// more kept where SingaPay sent more (a fee of `119.845` stays exact).
pub fn canonical_money(d: Decimal) -> Decimal {
    let mut d = d.normalize();
    if d.scale() < 2 {
        d.rescale(2);
    }
    d
}

/// The canonical form of a quantity: no trailing zeros (`"1"`, `1`, `1.0` → `1`).
pub fn canonical_quantity(d: Decimal) -> Decimal {
    d.normalize()
}

/// Formats an amount in Rupiah the Indonesian way: `Rp 1.250.000`, with a decimal comma only when
/// there are cents (`Rp 119,84`), and a leading minus for negatives (`-Rp 10.000`).
pub fn format_rupiah(amount: Decimal) -> String {
    let neg = amount.is_sign_negative() && !amount.is_zero();
    let abs = amount.abs().normalize();
    let text = abs.to_string();
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (text.clone(), None),
    };
    let mut grouped = String::with_capacity(int_part.len() + int_part.len() / 3);
    for (i, ch) in int_part.chars().enumerate() {
        if i > 0 && (int_part.len() - i) % 3 == 0 {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str("Rp ");
    out.push_str(&grouped);
    if let Some(f) = frac_part {
        let f = if f.len() == 1 { format!("{f}0") } else { f };
        out.push(',');
        out.push_str(&f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amounts_parse_from_numbers_and_strings_without_rounding() {
        assert_eq!(parse_decimal_text("\"20000.00\"").unwrap(), d("20000"));
        assert_eq!(parse_decimal_text("150000").unwrap(), d("150000"));
        assert_eq!(parse_decimal_text("119.84").unwrap().to_string(), "119.84");
        assert_eq!(parse_decimal_text("1e5").unwrap(), d("100000"));
        assert_eq!(
            parse_decimal_text("12345678901234567.89")
                .unwrap()
                .to_string(),
            "12345678901234567.89"
        );
        assert!(parse_decimal_text("\"abc\"").is_err());
        assert!(parse_decimal_text("\"\"").is_err());
    }

    #[test]
    fn canonical_forms_erase_encoding_only_differences() {
        assert_eq!(canonical_money(d("20000")).to_string(), "20000.00");
        assert_eq!(canonical_money(d("20000.000")).to_string(), "20000.00");
        assert_eq!(canonical_money(d("119.845")).to_string(), "119.845");
        assert_eq!(canonical_quantity(d("1.00")).to_string(), "1");
    }

    #[test]
    fn rupiah_uses_dot_thousands_and_decimal_comma() {
        assert_eq!(format_rupiah(d("1250000")), "Rp 1.250.000");
        assert_eq!(format_rupiah(d("20000.00")), "Rp 20.000");
        assert_eq!(format_rupiah(d("999")), "Rp 999");
        assert_eq!(format_rupiah(d("119.84")), "Rp 119,84");
        assert_eq!(format_rupiah(d("0.5")), "Rp 0,50");
        assert_eq!(format_rupiah(d("-10000")), "-Rp 10.000");
        assert_eq!(format_rupiah(d("0")), "Rp 0");
    }
}
