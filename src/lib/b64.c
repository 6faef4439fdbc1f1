/* placeholder: written by the store/parsers work */
