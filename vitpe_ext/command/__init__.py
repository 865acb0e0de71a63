"""The command wing: the `vitpe` command (python -m vitpe_ext) and its parts.

    cli.py          the parser, plot / demo, the entry point and its exit codes
    options.py      what the subcommands' options share: argument types and the tables they select
    resize.py       `vitpe resize` of checkpoint files and folders of them
    inspect_tables.py  `vitpe inspect`
    rel_pos_tables.py  timm's relative-position-bias tables (found, resized, their index buffers dropped)
    checkpoint.py   loading without running code, finding the table, saving
    resizing.py     how a table is resized, and the plan of a checkpoint's changes
    atomic.py       atomic output files and folders, signal cleanup, stale temp files
    hf_folder.py    resize/inspect of a Hugging Face model folder (hf_config.py: its config.json;
                    hf_beit.py: BEiT/Data2VecVision relative-position-bias tables)
    plot.py         similarity maps and histograms
    demo.py         `vitpe demo`: every mode against an exact answer
    bench.py        `vitpe bench`: verify, then time, against the anchors

Built on vitpe_ext.op and vitpe_ext.integrations; nothing imports this wing
but the entry points (vitpe_ext.__main__, the `vitpe` script).
"""
