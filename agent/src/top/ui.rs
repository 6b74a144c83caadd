//! The live view: ratatui on crossterm, full screen. ratatui draws into a
//! buffer and writes only the cells that changed, so refreshes do not
//! flicker. The terminal is restored on every way out: `q`, Ctrl-C, an
//! error, a panic (ratatui's hook) and SIGTERM/SIGHUP (a flag polled here).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    layout::{Alignment, Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, Wrap},
};

use super::{
    Source, TopArgs, health_warning,
    model::{self, Column, Filter, Row, Snapshot, View},
    totals_lines,
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGTERM and SIGHUP (a closed terminal) end the view like `q`, so the
/// terminal is restored and a local agent is stopped.
fn install_signal_flag() {
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; no other handler for these signals exists in
        // this process while the view runs.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Leaves the alternate screen and raw mode when dropped.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

struct App {
    sort: Column,
    reverse: bool,
    filter: Filter,
    /// The filter being typed, and the one to go back to on Esc.
    editing: Option<(String, Filter)>,
    paused: bool,
    help: bool,
    hide_idle: bool,
    /// What is shown (frozen while paused) and the newest.
    shown: Option<View>,
    latest: Option<View>,
    /// Rows of `shown`, filtered and sorted.
    rows: Vec<Row>,
    scroll: usize,
    error: Option<String>,
    source: String,
    interval: Duration,
}

impl App {
    fn relayout(&mut self) {
        self.rows = match &self.shown {
            Some(v) => v
                .rows
                .iter()
                .filter(|r| self.filter.matches(r) && (!self.hide_idle || r.active()))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        model::sort(&mut self.rows, self.sort, self.reverse);
        self.scroll = self.scroll.min(self.rows.len().saturating_sub(1));
    }

    fn set_view(&mut self, v: View) {
        self.latest = Some(v);
        if !self.paused {
            self.shown = self.latest.clone();
            self.relayout();
        }
    }

    /// Handles a key; false to quit.
    fn key(&mut self, k: KeyEvent, page: usize) -> bool {
        if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
            return false;
        }
        if let Some((text, before)) = &mut self.editing {
            match k.code {
                KeyCode::Enter => self.editing = None,
                KeyCode::Esc => {
                    self.filter = before.clone();
                    self.editing = None;
                }
                KeyCode::Backspace => {
                    text.pop();
                    self.filter = Filter::new(text);
                }
                KeyCode::Char(c) => {
                    text.push(c);
                    self.filter = Filter::new(text);
                }
                _ => {}
            }
            self.relayout();
            return true;
        }
        if self.help {
            self.help = false;
            return !matches!(k.code, KeyCode::Char('q'));
        }
        let pos = Column::ALL
            .iter()
            .position(|&c| c == self.sort)
            .unwrap_or(0);
        let n = Column::ALL.len();
        match k.code {
            KeyCode::Char('q') => return false,
            KeyCode::Char('<') | KeyCode::Left => {
                self.sort = Column::ALL[(pos + n - 1) % n];
                self.reverse = false;
            }
            KeyCode::Char('>') | KeyCode::Right => {
                self.sort = Column::ALL[(pos + 1) % n];
                self.reverse = false;
            }
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('/') | KeyCode::Char('f') => {
                self.editing = Some((self.filter.text().to_owned(), self.filter.clone()));
            }
            KeyCode::Esc => self.filter = Filter::default(),
            KeyCode::Char(' ') | KeyCode::Char('p') => {
                self.paused = !self.paused;
                if !self.paused {
                    self.shown = self.latest.clone();
                }
            }
            KeyCode::Char('i') => self.hide_idle = !self.hide_idle,
            KeyCode::Char('h') | KeyCode::Char('?') => self.help = true,
            KeyCode::Down => self.scroll += 1,
            KeyCode::Up => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageDown => self.scroll += page.max(1),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(page.max(1)),
            KeyCode::Home => self.scroll = 0,
            KeyCode::End => self.scroll = usize::MAX,
            _ => return true,
        }
        self.relayout();
        true
    }
}

pub fn run(args: &TopArgs, source: &Source, first: Snapshot) -> anyhow::Result<()> {
    let mut app = App {
        sort: args.sort,
        reverse: args.reverse,
        filter: Filter::new(args.filter.as_deref().unwrap_or("")),
        editing: None,
        paused: false,
        help: false,
        hide_idle: args.active,
        shown: None,
        latest: None,
        rows: Vec::new(),
        scroll: 0,
        error: None,
        source: source.describe(),
        interval: args.interval,
    };
    install_signal_flag();
    let _guard = TerminalGuard;
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let mut prev = first;
    let mut next = prev.at + args.interval;
    let mut page = 10;
    loop {
        terminal
            .draw(|f| page = draw(f, &app))
            .context("drawing the terminal")?;
        // Wake at least every 250 ms to see a stop signal.
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(250));
        if event::poll(wait).context("reading the terminal")? {
            if let Event::Key(k) = event::read().context("reading the terminal")?
                && k.kind == KeyEventKind::Press
                && !app.key(k, page)
            {
                break;
            }
            continue;
        }
        if STOP.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() < next {
            continue;
        }
        match source.sample() {
            Ok(s) => {
                app.set_view(View::between(&prev, &s));
                app.error = None;
                prev = s;
            }
            // Keep the last numbers on screen and retry next interval.
            Err(e) => app.error = Some(e),
        }
        next += args.interval;
        if next < Instant::now() {
            next = Instant::now() + args.interval;
        }
    }
    Ok(())
}

/// Which columns fit in `width` cells, and COMM's width.
fn fit(width: u16) -> (Vec<Column>, u16) {
    let mut cols: Vec<Column> = Column::ALL.to_vec();
    let need = |cols: &[Column]| -> u16 {
        cols.iter().map(|c| c.width()).sum::<u16>() + cols.len().saturating_sub(1) as u16
    };
    while need(&cols) > width {
        let Some((i, _)) = cols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.drop_order() > 0)
            .max_by_key(|(_, c)| c.drop_order())
        else {
            break;
        };
        cols.remove(i);
    }
    let spare = width.saturating_sub(need(&cols));
    (cols, Column::Comm.width() + spare.min(4))
}

fn utc_clock() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Draws the view; returns the table's height in rows (a page).
fn draw(f: &mut Frame, app: &App) -> usize {
    let [head, table_area, foot] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());

    let mut title = vec![
        Span::styled("iolens top", Style::new().bold()),
        Span::raw(format!(
            "  {}  every {:.1}s  {}",
            app.source,
            app.interval.as_secs_f64(),
            utc_clock()
        )),
    ];
    if app.paused {
        title.push(Span::styled("  PAUSED", Style::new().reversed()));
    }
    let [totals, more] = match &app.shown {
        Some(v) => totals_lines(v).map(Line::raw),
        None => [Line::raw("collecting the first interval…"), Line::raw("")],
    };
    f.render_widget(Paragraph::new(vec![Line::from(title), totals, more]), head);

    let (cols, comm_w) = fit(table_area.width);
    let width = |c: Column| {
        if c == Column::Comm { comm_w } else { c.width() }
    };
    let cell = |c: Column, text: String| {
        let line = Line::raw(text);
        Cell::from(if c == Column::Comm {
            line
        } else {
            line.alignment(Alignment::Right)
        })
    };
    let header = TableRow::new(cols.iter().map(|&c| {
        let style = if c == app.sort {
            Style::new().reversed().bold()
        } else {
            Style::new().bold()
        };
        cell(c, c.header().to_owned()).style(style)
    }));
    let page = table_area.height.saturating_sub(1) as usize;
    let start = app.scroll.min(app.rows.len().saturating_sub(page.max(1)));
    let body = app
        .rows
        .iter()
        .skip(start)
        .take(page)
        .map(|r| TableRow::new(cols.iter().map(|&c| cell(c, c.cell(r)))));
    f.render_widget(
        Table::new(body, cols.iter().map(|&c| Constraint::Length(width(c))))
            .header(header)
            .column_spacing(1),
        table_area,
    );

    let warning = app.shown.as_ref().and_then(health_warning);
    let status = match (&app.editing, &app.error, warning) {
        (Some((text, _)), _, _) => Line::from(vec![
            Span::styled("filter (name or pid): ", Style::new().bold()),
            Span::raw(format!("{text}_")),
            Span::raw("   Enter keeps it, Esc cancels"),
        ]),
        (None, Some(e), _) => Line::styled(format!("fetch failed: {e}"), Style::new().red().bold()),
        (None, None, Some(w)) => Line::styled(w, Style::new().yellow().bold()),
        (None, None, None) => {
            let arrow = if app.sort.ascending_by_default() != app.reverse {
                "▲"
            } else {
                "▼"
            };
            let mut s = format!("sort {}{arrow}", app.sort.header());
            if !app.filter.is_empty() {
                s.push_str(&format!("  filter `{}`", app.filter.text()));
            }
            if app.hide_idle {
                s.push_str("  idle hidden");
            }
            s.push_str(&format!(
                "  {} rows  < > sort  r rev  / filter  space pause  h help  q quit",
                app.rows.len()
            ));
            Line::styled(s, Style::new().add_modifier(Modifier::DIM))
        }
    };
    f.render_widget(Paragraph::new(status), foot);

    if app.help {
        help(f);
    }
    page
}

fn help(f: &mut Frame) {
    let mut lines = vec![
        Line::styled("Keys", Style::new().bold()),
        Line::raw(" < > ← →  sort column    r    reverse     / f       filter: name or pid"),
        Line::raw(" space p  pause          i    hide idle   ↑ ↓ PgUp PgDn Home End  scroll"),
        Line::raw(" Esc      clear filter   h ?  this help   q Ctrl-C  quit"),
        Line::styled("Columns (rates over the interval)", Style::new().bold()),
    ];
    lines.extend(
        Column::ALL
            .iter()
            .filter(|c| !matches!(c, Column::Pid | Column::Comm))
            .map(|c| Line::raw(format!(" {:<8} {}", c.header(), c.meaning()))),
    );
    let area = f.area();
    let w = area.width.min(78);
    let h = area.height.min(lines.len() as u16 + 2);
    let rect = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::new()
                .borders(Borders::ALL)
                .title(" iolens top: help (any key closes) "),
        ),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;

    #[test]
    fn columns_fit_80_and_wide_terminals() {
        let (cols, comm) = fit(80);
        let used: u16 = cols
            .iter()
            .map(|&c| if c == Column::Comm { comm } else { c.width() })
            .sum::<u16>()
            + cols.len() as u16
            - 1;
        assert!(used <= 80, "{used}");
        for c in [
            Column::Pid,
            Column::Comm,
            Column::User,
            Column::ZeroCopy,
            Column::Cpu,
        ] {
            assert!(cols.contains(&c), "{c:?} hidden at 80 columns");
        }
        assert!(!cols.contains(&Column::EventsPerWakeup));
        // As docs/top.md says.
        assert_eq!(
            cols,
            [
                Column::Pid,
                Column::Comm,
                Column::User,
                Column::ZeroCopy,
                Column::Copies,
                Column::Syscalls,
                Column::Cpu,
                Column::Wait,
            ]
        );
        let all = Column::ALL.iter().map(|c| c.width()).sum::<u16>() + Column::ALL.len() as u16 - 1;
        assert_eq!(all, 127);
        assert_eq!(fit(200).0.len(), Column::ALL.len());
        // Narrower than the essentials: they stay (ratatui clips).
        assert_eq!(fit(20).0.len(), 4);
    }

    #[test]
    fn draws_at_80x24_with_help() {
        let mut app = App {
            sort: Column::User,
            reverse: false,
            filter: Filter::default(),
            editing: None,
            paused: true,
            help: false,
            hide_idle: false,
            shown: None,
            latest: None,
            rows: Vec::new(),
            scroll: 0,
            error: None,
            source: "http://127.0.0.1:9464/metrics".into(),
            interval: Duration::from_secs(1),
        };
        let mut t = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
        t.draw(|f| {
            draw(f, &app);
        })
        .expect("draw");
        let screen = format!("{}", t.backend());
        assert!(
            screen.contains("PAUSED") && screen.contains("USER/s"),
            "{screen}"
        );
        app.help = true;
        t.draw(|f| {
            draw(f, &app);
        })
        .expect("draw");
        let screen = format!("{}", t.backend());
        assert!(
            screen.contains("reverse") && screen.contains("io_uring SQEs"),
            "{screen}"
        );
        // Any key closes help without acting; q then quits.
        let k = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
        assert!(app.key(k('r'), 10) && !app.help && !app.reverse);
        assert!(app.key(k('>'), 10));
        assert_eq!(app.sort, Column::ZeroCopy);
        assert!(!app.key(k('q'), 10));
    }
}
