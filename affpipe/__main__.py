from affpipe.cli import main

raise SystemExit(main())
