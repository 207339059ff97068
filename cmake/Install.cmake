# Installation: binaries, the client and shm libraries with their public
# headers, an exported CMake package (find_package(structd) ->
# structd::client, structd::shm), a pkg-config file (structd.pc), the
# example config, the systemd unit and the docs.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set_target_properties(structd_shm PROPERTIES EXPORT_NAME shm)
# POSIX helpers the static shm library needs at link time; no headers.
set_target_properties(structd_base PROPERTIES EXPORT_NAME base_internal)
set_target_properties(structd_client PROPERTIES EXPORT_NAME client)
# Generated protobuf code the static client library needs at link time;
# its headers are not installed (no public header uses them).
set_target_properties(structd_proto PROPERTIES EXPORT_NAME proto_internal)

install(TARGETS structd structctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS structd_base structd_shm structd_client structd_proto
  EXPORT structdTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The client API and the shm headers it includes; owner-only machinery
# (allocator.h, walk.h, format_value.h) and base/ stay out of the API.
install(DIRECTORY client/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES
  shm/include/structd/shm/arena.h
  shm/include/structd/shm/arena_storage.h
  shm/include/structd/shm/field.h
  shm/include/structd/shm/field_wait.h
  shm/include/structd/shm/field_watch.h
  shm/include/structd/shm/move_lane.h
  shm/include/structd/shm/port_ring.h
  shm/include/structd/shm/session_record.h
  shm/include/structd/shm/snapshot_fields.h
  shm/include/structd/shm/format.h
  shm/include/structd/shm/inspection.h
  shm/include/structd/shm/layout.h
  shm/include/structd/shm/mapping_guard.h
  shm/include/structd/shm/ref.h
  shm/include/structd/shm/sync.h
  shm/include/structd/shm/type_token.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/structd/shm)
# The annotated mutex the client's public headers hold (header-only), and
# the descriptor type arena.h passes (UniqueFd).
install(FILES shm/base/include/structd/base/mutex.h shm/base/include/structd/base/posix.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/structd/base)

set(_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/structd)
install(EXPORT structdTargets NAMESPACE structd:: DESTINATION ${_cmake_dir})
configure_package_config_file(cmake/structdConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/structdConfig.cmake INSTALL_DESTINATION ${_cmake_dir})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/structdConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/structdConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/structdConfigVersion.cmake DESTINATION ${_cmake_dir})

file(RELATIVE_PATH STRUCTD_PC_TO_PREFIX "/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/")
string(REGEX REPLACE "/$" "" STRUCTD_PC_TO_PREFIX "${STRUCTD_PC_TO_PREFIX}")
configure_file(cmake/structd.pc.in ${CMAKE_CURRENT_BINARY_DIR}/structd.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/structd.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(FILES deploy/config/structd.toml DESTINATION ${CMAKE_INSTALL_DATADIR}/structd)
install(FILES deploy/systemd/structd.service DESTINATION ${CMAKE_INSTALL_DATADIR}/structd/systemd)
install(DIRECTORY doc/ DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
