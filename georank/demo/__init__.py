"""The embedded demo: a synthetic world of photos (:mod:`~georank.demo.world`), the set-up that
builds its tiny models, index and tables offline (:mod:`~georank.demo.setup`), and the look of one
photo (:mod:`~georank.demo.look`). Nothing here is needed to run on real data."""
