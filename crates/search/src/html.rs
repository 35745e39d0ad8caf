//! The latent dashboard as one self-contained HTML page: per latent its density, quantiles and
//! top contexts, every token shaded by the latent's activation on it (relative to the
//! latent's maximum), the top token outlined, the activation in each token's tooltip.

use std::fmt::Write;

use crate::latents::LatentContexts;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push('⏎'),
            c => out.push(c),
        }
    }
    out
}

/// Renders the page; `decode` turns one token id into its text.
pub fn latent_page(
    title: &str,
    latents: &[LatentContexts],
    decode: &dyn Fn(u32) -> String,
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:70em}}\
         .ctx{{font-family:monospace;white-space:pre-wrap;margin:.2em 0;padding:.2em;border-bottom:1px solid #eee}}\
         .tok{{border-radius:2px}} .focus{{outline:2px solid #c00}}\
         td,th{{padding:.1em .6em;text-align:right}} .act{{color:#666;display:inline-block;width:5em}}\
         .loc{{color:#666;white-space:nowrap;margin-left:1em}}\
         </style></head><body><h1>{t}</h1>",
        t = escape(title)
    );
    for l in latents {
        let _ = write!(
            h,
            "<h2 id=\"latent-{i}\">Latent {i}</h2><table><tr><th>density</th><th>fires</th>\
             <th>tokens</th><th>max</th><th>mean when firing</th>",
            i = l.latent
        );
        for (q, _) in &l.quantiles {
            let _ = write!(h, "<th>q{:.0}</th>", q * 100.0);
        }
        let _ = write!(
            h,
            "</tr><tr><td>{:.3e}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td>",
            l.density, l.fires, l.tokens, l.max, l.mean_when_firing
        );
        for (_, v) in &l.quantiles {
            let _ = write!(h, "<td>{v:.4}</td>");
        }
        h.push_str("</tr></table>");
        if l.contexts.is_empty() {
            h.push_str("<p>Never fires on the selected tokens.</p>");
        }
        let max = l.max.max(f64::MIN_POSITIVE);
        for c in &l.contexts {
            let _ = write!(
                h,
                "<div class=\"ctx\"><span class=\"act\">{:.3}</span>",
                c.activation
            );
            for (k, (&id, &a)) in c.tokens.iter().zip(&c.acts).enumerate() {
                let alpha = (a.max(0.0) as f64 / max).clamp(0.0, 1.0);
                let _ = write!(
                    h,
                    "<span class=\"tok{}\" style=\"background:rgba(255,120,0,{alpha:.3})\" \
                     title=\"token {id}: {a:.4}\">{}</span>",
                    if k == c.focus { " focus" } else { "" },
                    escape(&decode(id))
                );
            }
            let _ = write!(
                h,
                "<span class=\"loc\">seq {} pos {}</span></div>",
                c.seq_id, c.position
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}
