# The two commands: `make report` (the whole pipeline on the embedded sample
# data) and `make test`. Both create .venv with the pinned dependencies first.
PY      := .venv/bin/python
TASK    ?= cv
PROFILE ?= demo
# the image pair writes to _output, the text pair to _output_nlp
OUT     ?= $(if $(filter cv,$(TASK)),_output,_output_$(TASK))
WORKERS ?=
IMAGES  ?=
# the four presenters' names for the decks' title slide and notes, e.g. PRESENTERS="Ann,Bo,Cy,Di"
# (default: Presenter 1 .. Presenter 4)
PRESENTERS ?=
RENDER  = $(PY) render_slides.py --output-dir $(OUT) $(if $(PRESENTERS),--presenters "$(PRESENTERS)")

.PHONY: report sync batch merge slides slides-check test evidence bench-data bench-text bench-text-data clean \
	test-colab
.DEFAULT_GOAL := report

.venv/.installed: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	@# pip byte-compiles on one core (a minute of the install); compileall uses them all. The
	@# few files it cannot compile are ones pip skips too (e.g. torch's Python 3.12 tests).
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -r requirements.txt
	$(PY) -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3" >/dev/null
	@# reveal.js makes slides.html self-contained; without npm it links reveal.js's CDN
	command -v npm >/dev/null && npm install --silent --no-audit --no-fund \
		--prefix .venv/npm reveal.js@5.2.1 || echo "npm not found: slides.html will use a CDN"
	touch $@

report: .venv/.installed
	$(PY) nbexport.py
	$(PY) merge_notebook.py
	$(PY) run_batch.py params/$(TASK)-$(PROFILE).yaml --output-dir $(OUT) \
		$(if $(WORKERS),--workers $(WORKERS)); status=$$?; \
	$(RENDER) && exit $$status

batch: .venv/.installed
	$(PY) run_batch.py params/$(TASK)-$(PROFILE).yaml --output-dir $(OUT)

merge: .venv/.installed
	$(PY) merge_notebook.py

# After editing a chapter: its export cells -> speedup/*.py, the chapters -> speedup.ipynb
sync: .venv/.installed
	$(PY) nbexport.py
	$(PY) merge_notebook.py

slides: .venv/.installed
	$(RENDER)

# The decks in $(OUT) as the audience sees them: slides.pptx drawn by LibreOffice, slides.html
# by headless Chromium; fails on text outside its box, small text, small or stray figures, blank
# slides, and a talk over its time. PNGs of every slide in $(OUT)/slides_png. Needs
# `apt-get install libreoffice-impress chromium poppler-utils` (.ci/run installs them).
slides-check: .venv/.installed
	$(PY) check_slides.py --output-dir $(OUT)

# The evidence run: both pairs' evidence profiles (params/<task>-evidence.yaml, 10 seed pairs,
# 34 minutes on 2 cores from a fresh clone, measured 2026-12-04: cv 17, nlp 15, set-up 2),
# each pair's claims published into EVIDENCE.md and quoted in README.md
evidence: .venv/.installed
	$(PY) nbexport.py
	$(PY) merge_notebook.py
	@# both pairs run before either is published: a published EVIDENCE.md would make the
	@# second pair's commit read "-dirty"
	status=0; for t in cv nlp; do \
		$(PY) run_batch.py params/$$t-evidence.yaml --output-dir _evidence_$$t || status=1; \
	done; for t in cv nlp; do \
		test -f _evidence_$$t/tables/evidence.md && $(PY) -c "from speedup.evidence import publish_evidence; \
			publish_evidence('_evidence_$$t', 'EVIDENCE.md', 'README.md')" || status=1; \
	done; exit $$status

test: .venv/.installed
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=10 tests

# the data stage on a Caltech-256-sized synthetic archive; IMAGES=3000 for a quick run
bench-data: .venv/.installed
	$(PY) bench_data.py $(if $(IMAGES),--images $(IMAGES))

# training tokens/s of BERT and GPT-1 at each size preset
bench-text: .venv/.installed
	$(PY) bench_text.py

# peak memory and time of the text versions on full-size synthetic corpora; ARCHIVE=1 adds
# the .tar.bz2 run, BOOK_GB the size of the synthetic BookCorpus
bench-text-data: .venv/.installed
	$(PY) bench_text_data.py $(if $(ARCHIVE),--archive) $(if $(BOOK_GB),--book-gb $(BOOK_GB))

clean:
	rm -rf $(OUT) _cache

# Outside CI, not part of `make test`: the merged notebook's demo (both tasks) in .venv-colab,
# built from requirements-colab.txt with Colab's Python 3.13 and library versions (the first
# run downloads ~1.5 GB of wheels); see check_colab.py
test-colab:
	python3 check_colab.py
