//! `target/bench.svg`: the exit costs of `cargo xtask bench` as a bar chart, per backend, with Linux KVM
//! beside them when `--vs-kvm` measured it. Drawn with `plotters`' SVG backend only (its text is SVG
//! text, so no font files or system libraries are needed). The y axis is logarithmic: KVM's figures
//! here are about 25 times libvmm's.
use std::path::Path;

use plotters::prelude::*;

/// One bar: (group, series, value). Groups are exits, series are backends (and KVM).
pub type Bar = (String, String, f64);

const COLOURS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Draws `bars` to `path` as grouped bars (one group per exit, one colour per series).
pub fn draw(path: &Path, title: &str, bars: &[Bar]) -> Result<(), String> {
    let mut groups: Vec<&str> = Vec::new();
    let mut series: Vec<&str> = Vec::new();
    for (g, s, _) in bars {
        if !groups.contains(&g.as_str()) {
            groups.push(g);
        }
        if !series.contains(&s.as_str()) {
            series.push(s);
        }
    }
    if bars.is_empty() {
        return Err("no figures to draw".into());
    }
    let top = bars.iter().map(|b| b.2).fold(1.0, f64::max) * 3.0;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| format!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let width = groups.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..width, (1f64..top).log_scale())
        .map_err(e)?;
    let names: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < names.len() {
                names[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("emulated instructions per round trip (log)")
        .draw()
        .map_err(e)?;
    let slot = 0.8 / series.len() as f64;
    for (si, s) in series.iter().enumerate() {
        let colour = COLOURS[si % COLOURS.len()];
        let mine: Vec<(f64, f64)> = bars
            .iter()
            .filter(|b| b.1 == *s)
            .map(|b| {
                let gi = groups.iter().position(|g| *g == b.0).unwrap() as f64;
                (gi + 0.1 + slot * si as f64, b.2)
            })
            .collect();
        chart
            .draw_series(mine.iter().map(|&(x, v)| {
                Rectangle::new([(x, 1.0), (x + slot * 0.9, v.max(1.0))], colour.filled())
            }))
            .map_err(e)?
            .label(*s)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
        chart
            .draw_series(mine.iter().map(|&(x, v)| {
                Text::new(
                    format!("{v:.0}"),
                    (x, v.max(1.0) * 1.15),
                    ("sans-serif", 12).into_font(),
                )
            }))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_grouped_bars_as_svg() {
        let dir = std::env::temp_dir().join(format!("libvmm-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("bench.svg");
        let bars = vec![
            ("CPUID".to_string(), "svm".to_string(), 118.0),
            ("CPUID".to_string(), "KVM".to_string(), 3032.0),
            ("null hypercall".to_string(), "svm".to_string(), 107.0),
        ];
        draw(&p, "exit costs", &bars).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40.min(svg.len())]);
        for text in ["exit costs", "3032", "118", "KVM", "svm", "null hypercall"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(svg.matches("<rect").count() >= 3);
        assert!(draw(&p, "x", &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
