from nvbind.cli import main

raise SystemExit(main())
