"""The dashboard's pages: each module holds one page's layout and the callbacks that draw it."""
