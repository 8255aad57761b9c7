//! The loss curves as an SVG: one panel per task, one line per method (its best learning rate).

use plotters::prelude::*;

use crate::demo::train::Curve;

/// (task name, [(method name, curve)]).
pub type Panel<'a> = (&'a str, Vec<(String, &'a Curve)>);

pub fn write_svg(path: &std::path::Path, panels: &[Panel]) -> Result<(), Box<dyn std::error::Error>> {
    let columns = panels.len().clamp(1, 2);
    let rows = panels.len().div_ceil(columns).max(1);
    let root = SVGBackend::new(path, (600 * columns as u32, 420 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    for (area, (task, lines)) in root.split_evenly((rows, columns)).iter().zip(panels) {
        let points = lines.iter().flat_map(|(_, c)| c.points.iter());
        let (last_step, low, high) = points.fold((1, f64::MAX, f64::MIN), |(s, lo, hi), &(step, loss)| {
            (s.max(step), lo.min(loss.max(1e-12)), hi.max(loss))
        });
        let mut chart = ChartBuilder::on(area)
            .caption(format!("task: {task}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0usize..last_step, (low * 0.8..high * 1.25).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("held-out MSE (log)")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()?;
        for (index, (method, curve)) in lines.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            chart
                .draw_series(LineSeries::new(curve.points.iter().copied(), color.stroke_width(2)))?
                .label(method.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
