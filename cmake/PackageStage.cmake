# CPACK_PRE_BUILD_SCRIPTS of cmake/Packaging.cmake: runs on CPack's staging tree, after the install
# and before the .debs are made. Debian ships manual pages compressed (gzip -9n: no name, no
# timestamp, so the package is reproducible); `make install` leaves them as the build made them.
file(GLOB_RECURSE pages "${CPACK_TEMPORARY_DIRECTORY}/*") # each component's tree under it
list(FILTER pages INCLUDE REGEX "/usr/share/man/[^/]+/[^/]+$")
foreach(page IN LISTS pages)
  if(NOT page MATCHES "[.]gz$" AND NOT IS_SYMLINK "${page}")
    execute_process(COMMAND gzip -9nf "${page}" RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "gzip ${page}: ${rc}")
    endif()
  endif()
endforeach()
