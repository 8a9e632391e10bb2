from evoray.dashboard.app import main

raise SystemExit(main())
