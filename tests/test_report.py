"""The report module in a fresh process without a display: importing it loads no pyplot (no backend chosen), every
writer works headless, no figure is leaked into pyplot, and only the target files appear (no temp files left)."""
import os
import subprocess
import sys
import textwrap


def test_report_headless(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import numpy as np
        from hyperformer import report
        assert "matplotlib.pyplot" not in sys.modules
        out = Path({str(tmp_path)!r})
        t2 = report.paper_table("table2")
        report.plot_curves(t2, "k", "mean", "method", out / "t2.png", "Table 2", yerr="std", logx=True)
        report.plot_curves(report.paper_figure2(), "k", "value", "method", out / "f2.png", "Figure 2", yerr="std")
        report.plot_bars(report.paper_table("table6"), "method", "minutes_per_1000_steps", out / "t6.png", "Table 6")
        rng = np.random.default_rng(0)
        report.plot_embeddings_pca({{t: rng.normal(size=8) for t in ("cola", "rte", "cb")}}, out / "f3.png", "Fig 3")
        t1 = report.paper_table("table1")
        cmp = report.compare(t1.assign(value=t1["value"] - 1), t1, ["method", "size", "regime", "task", "metric"])
        assert (cmp["diff"].round(9) == -1).all()
        report.render_table(cmp, "Table 1", "smoke", [0, 1, 2], out / "t1")
        if "matplotlib.pyplot" in sys.modules:  # seaborn imports pyplot; no figure may be left registered there
            assert sys.modules["matplotlib.pyplot"].get_fignums() == []
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["f2.png", "f3.png", "t1.csv", "t1.html", "t1.md", "t2.png", "t6.png"], names
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    assert "profile: smoke; seeds: 0, 1, 2 (n=3)" in (tmp_path / "t1.md").read_text()
